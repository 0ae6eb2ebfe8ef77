/**
 * The web inspector's page: its HTML, style and script, kept as strings so
 * that they ship in the built package as they are (`Ui` serves them).
 *
 * The script puts data in the DOM only with `textContent` (through `el`),
 * never as HTML; the only markup it inserts is Mermaid's SVG, rendered with
 * `securityLevel: "strict"` from text the server escaped, and stripped of
 * scripts and event handlers once more. It must not contain backticks or
 * dollar-brace sequences: it lives in a template literal.
 *
 * @internal
 */

/** @internal */
export const pageHtml = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>effect-fsm inspector</title>
<link rel="stylesheet" href="/ui.css">
<script src="/mermaid.min.js"></script>
<script src="/ui.js" defer></script>
</head>
<body>
<header>
  <a class="brand" href="#/">effect-fsm inspector</a>
  <nav id="nav"></nav>
  <span id="mode"></span>
</header>
<main id="main"><p>Loading…</p></main>
</body>
</html>
`

/** @internal */
export const pageStyle = `
:root { font-family: system-ui, sans-serif; color: #1f2937; background: #f9fafb; }
body { margin: 0; }
header { display: flex; gap: 1.5rem; align-items: center; padding: .6rem 1.2rem; background: #111827; color: #f9fafb; }
header a { color: #f9fafb; text-decoration: none; }
header .brand { font-weight: 700; }
nav { display: flex; gap: 1rem; flex: 1; }
#mode { font-size: .85rem; opacity: .8; }
main { padding: 1rem 1.2rem; }
section { background: #fff; border: 1px solid #e5e7eb; border-radius: 6px; padding: .8rem 1rem; margin-bottom: 1rem; }
h2 { margin: .2rem 0 .6rem; font-size: 1.2rem; }
h3 { margin: .8rem 0 .4rem; font-size: 1rem; }
table { border-collapse: collapse; font-size: .88rem; margin: .3rem 0; }
th, td { border-bottom: 1px solid #e5e7eb; padding: .25rem .6rem; text-align: left; vertical-align: top; }
th { background: #f3f4f6; }
pre { background: #f3f4f6; padding: .4rem .6rem; margin: 0; white-space: pre-wrap; word-break: break-all; font-size: .8rem; max-width: 60rem; }
.diagram svg { max-width: 100%; height: auto; }
.error { color: #b91c1c; font-weight: 600; }
.muted { color: #6b7280; }
form { display: flex; flex-wrap: wrap; gap: .6rem; align-items: end; margin-bottom: .6rem; }
label { display: flex; flex-direction: column; font-size: .8rem; gap: .15rem; }
input, select, button { font: inherit; padding: .2rem .4rem; }
button.danger { color: #b91c1c; }
`

/** @internal */
export const pageScript = `"use strict";
(function () {
  var main = document.getElementById("main");
  var nav = document.getElementById("nav");
  var mode = document.getElementById("mode");
  var meta = { machines: [], allowActions: false, tokenHeader: "x-effect-fsm-token" };
  var diagrams = 0;
  var notice = null;

  // The token of actions comes in the URL's fragment (never sent to the server) and stays for the tab.
  if (location.hash.indexOf("#token=") === 0) {
    sessionStorage.setItem("effect-fsm-token", decodeURIComponent(location.hash.slice(7)));
    history.replaceState(null, "", location.pathname + "#/");
  }

  window.mermaid.initialize({ startOnLoad: false, securityLevel: "strict", theme: "default", flowchart: { htmlLabels: false } });

  /** An element with text children only: strings become text nodes, never markup. */
  function el(tag, attributes) {
    var node = document.createElement(tag);
    var attrs = attributes || {};
    Object.keys(attrs).forEach(function (key) {
      if (key === "text") node.textContent = String(attrs[key]);
      else if (key === "onclick") node.addEventListener("click", attrs[key]);
      else if (key === "onsubmit") node.addEventListener("submit", attrs[key]);
      else if (attrs[key] !== undefined && attrs[key] !== null) node.setAttribute(key, String(attrs[key]));
    });
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined) continue;
      node.appendChild(typeof child === "string" || typeof child === "number" ? document.createTextNode(String(child)) : child);
    }
    return node;
  }

  function hashOf(view, params) {
    var query = new URLSearchParams();
    Object.keys(params || {}).forEach(function (key) {
      if (params[key] !== undefined && params[key] !== null && params[key] !== "") query.set(key, params[key]);
    });
    var text = query.toString();
    return "#/" + view + (text === "" ? "" : "?" + text);
  }

  function link(text, view, params) { return el("a", { href: hashOf(view, params), text: text }); }

  function api(path, params, init) {
    var query = new URLSearchParams(params || {}).toString();
    return fetch("/api/" + path + (query === "" ? "" : "?" + query), init).then(function (response) {
      return response.json().then(function (body) {
        if (!response.ok) throw new Error(body && body.message ? body.message : "HTTP " + response.status);
        return body;
      });
    });
  }

  function time(millis) { return millis === null || millis === undefined ? "-" : new Date(millis).toISOString(); }

  function ago(millis) {
    var seconds = Math.round((Date.now() - millis) / 1000);
    var future = seconds < 0;
    seconds = Math.abs(seconds);
    var text = seconds < 120 ? seconds + "s" : seconds < 7200 ? Math.round(seconds / 60) + "m" : seconds < 172800 ? Math.round(seconds / 3600) + "h" : Math.round(seconds / 86400) + "d";
    return future ? "in " + text : text + " ago";
  }

  function json(value) { return el("pre", { text: JSON.stringify(value, null, 2) }); }

  function table(headers, rows, empty) {
    if (rows.length === 0) return el("p", { class: "muted", text: empty || "none" });
    var head = el("tr");
    headers.forEach(function (h) { head.appendChild(el("th", { text: h })); });
    var body = el("tbody");
    rows.forEach(function (row) {
      var tr = el("tr");
      row.forEach(function (cell) { tr.appendChild(el("td", {}, cell === null || cell === undefined ? "-" : cell)); });
      body.appendChild(tr);
    });
    return el("table", {}, el("thead", {}, head), body);
  }

  /** Mermaid's SVG, parsed inertly and stripped of scripts and handlers before it joins the page. */
  function diagram(text, kind) {
    var box = el("div", { class: "diagram", "data-diagram": kind });
    window.mermaid.render("mermaid-" + (++diagrams), text).then(function (result) {
      var parsed = new DOMParser().parseFromString(result.svg, "text/html");
      var svg = parsed.querySelector("svg");
      if (svg === null) throw new Error("no diagram");
      svg.querySelectorAll("script, iframe, object, embed").forEach(function (node) { node.remove(); });
      [svg].concat(Array.prototype.slice.call(svg.querySelectorAll("*"))).forEach(function (node) {
        Array.prototype.slice.call(node.attributes).forEach(function (attr) {
          if (/^on/i.test(attr.name) || /^\\s*javascript:/i.test(attr.value)) node.removeAttribute(attr.name);
        });
      });
      box.replaceChildren(document.importNode(svg, true));
    }).catch(function (error) {
      box.replaceChildren(el("p", { class: "error", text: "diagram: " + error.message }), el("pre", { text: text }));
    });
    return box;
  }

  function show() {
    main.replaceChildren.apply(main, arguments);
  }

  function failed(error) { show(el("p", { class: "error", "data-error": "", text: error.message })); }

  // --- Views ---------------------------------------------------------------

  function machinesView() {
    return Promise.all(meta.machines.map(function (name) { return api("machine", { machine: name }); })).then(function (machines) {
      show.apply(null, machines.map(function (m) {
        var counts = m.counts.map(function (c) {
          return [link(c.stateTag, "instances", { machine: m.name, state: c.stateTag, stopped: String(c.stopped) }), c.stopped ? "stopped" : "running", String(c.count)];
        });
        var timers = m.upcomingTimers.map(function (t) {
          return [link(t.instanceId, "instance", { machine: m.name, id: t.instanceId }), t.name, t.stateTag, time(t.dueAt) + " (" + ago(t.dueAt) + ")"];
        });
        return el("section", { "data-machine": m.name },
          el("h2", {}, m.name + " ", link("instances", "instances", { machine: m.name }), " · ", link("dead letters", "dead-letters", { machine: m.name })),
          diagram(m.diagram, "machine"),
          el("h3", { text: "Instances per state" }),
          table(["State", "", "Count"], counts, "no instances"),
          el("h3", { text: "Timers due in the next hour" }),
          table(["Instance", "Timer", "State", "Due"], timers, "no timers due within the hour"));
      }));
    });
  }

  function instancesView(params) {
    var machine = params.get("machine") || meta.machines[0];
    var filters = { machine: machine, state: params.get("state"), olderThan: params.get("olderThan"), stopped: params.get("stopped"), id: params.get("id"), correlationId: params.get("correlationId"), limit: params.get("limit") };
    var query = { machine: machine, limit: "50" };
    ["state", "olderThan", "stopped", "id", "correlationId", "after", "limit"].forEach(function (key) { if (params.get(key)) query[key] = params.get(key); });
    var input = function (name, label, placeholder) {
      return el("label", {}, label, el("input", { name: name, value: filters[name] || "", placeholder: placeholder }));
    };
    var form = el("form", {
      onsubmit: function (event) {
        event.preventDefault();
        var data = new FormData(form);
        var next = { machine: machine, limit: filters.limit };
        data.forEach(function (value, key) { next[key] = value; });
        location.hash = hashOf("instances", next);
      }
    }, input("id", "Instance id", "order-1"), input("correlationId", "Correlation id", "req-42"), input("state", "State", "Paid"), input("olderThan", "In this state longer than", "10 minutes"),
      el("label", {}, "Stopped", (function () {
        var select = el("select", { name: "stopped" }, el("option", { value: "", text: "any" }), el("option", { value: "false", text: "running" }), el("option", { value: "true", text: "stopped" }));
        select.value = filters.stopped || "";
        return select;
      })()),
      el("button", { type: "submit", text: "Search" }));
    return api("instances", query).then(function (page) {
      var rows = page.instances.map(function (i) {
        return [link(i.instanceId, "instance", { machine: machine, id: i.instanceId }), i.stateTag, time(i.enteredAt) + " (" + ago(i.enteredAt) + ")", String(i.seqNr), i.stopped ? "stopped" : "running"];
      });
      var more = page.next === null ? null : el("p", {}, el("a", { "data-next": "", href: hashOf("instances", Object.assign({}, filters, { after: page.next })), text: "next page →" }));
      show(el("section", { "data-view": "instances" },
        el("h2", { text: machine + ": instances" }),
        form,
        el("p", { class: "muted", text: "Search by instance id, or by correlation id: the instances one request touched." }),
        table(["Instance", "State", "Entered", "SeqNr", ""], rows, "no instances match"),
        more));
    });
  }

  function instanceView(params) {
    var machine = params.get("machine");
    var id = params.get("id");
    return api("instance", { machine: machine, id: id }).then(function (d) {
      var s = d.summary;
      var historyRow = function (e) {
        return [String(e.seqNr), e.tag, e.stateTag, time(e.metadata && e.metadata.timestamp), json(e.payload), json(e.metadata)];
      };
      var history = d.history.entries.map(historyRow);
      var historyBox = el("div", { "data-history": "" }, table(["SeqNr", "Event", "State after", "At", "Payload", "Metadata"], history));
      var moreHistory = function (from) {
        if (from === null) return null;
        var button = el("button", { type: "button", "data-more-history": "", text: "more history", onclick: function () {
          api("history", { machine: machine, id: id, fromSeqNr: String(from) }).then(function (page) {
            var body = historyBox.querySelector("tbody");
            page.entries.map(historyRow).forEach(function (row) {
              var tr = el("tr");
              row.forEach(function (cell) { tr.appendChild(el("td", {}, cell)); });
              body.appendChild(tr);
            });
            button.replaceWith(moreHistory(page.next) || el("span"));
          }).catch(function (error) { button.replaceWith(el("p", { class: "error", text: error.message })); });
        } });
        return button;
      };
      var timers = d.timers.map(function (t) {
        return [t.name, t.stateTag, String(t.generation), time(t.dueAt) + " (" + ago(t.dueAt) + ")", String(t.attempts), t.lastError];
      });
      var commands = d.commands.map(function (c) {
        return [c.seqNr + ":" + c.index, c.kind, c.tag, time(c.dueAt), String(c.attempts), c.lastError, json(c.payload)];
      });
      show(el("section", { "data-view": "instance" },
        el("h2", {}, machine + " / ", el("span", { "data-instance-id": "", text: id })),
        table(["State", "Entered", "Updated", "SeqNr", ""], [[s.stateTag, time(s.enteredAt) + " (" + ago(s.enteredAt) + ")", time(s.updatedAt), String(s.seqNr), s.stopped ? "stopped" : "running"]]),
        el("h3", { text: "Where it is" }),
        diagram(d.diagram, "current"),
        el("h3", { text: "Its path" }),
        d.trace === null ? el("p", { class: "error", text: "trace: " + d.traceError }) : diagram(d.trace, "trace"),
        el("h3", { text: "State" }), json(d.state),
        el("h3", { text: "Deadlines" }),
        table(["Timer", "Due"], d.deadlines.map(function (x) { return [x.name, time(x.dueAt) + " (" + ago(x.dueAt) + ")"]; })),
        el("h3", { text: "Timer rows" }),
        table(["Timer", "State", "Generation", "Due", "Attempts", "Last error"], timers),
        el("h3", { text: "Outbox commands" }),
        table(["Command", "Kind", "Tag", "Due", "Attempts", "Last error", "Payload"], commands),
        el("h3", { text: "Lease" }),
        d.lease === null ? el("p", { class: "muted", text: "no lease held" }) : table(["Owner", "Token", "Expires"], [[d.lease.owner, String(d.lease.token), time(d.lease.expiresAt)]]),
        el("h3", { text: "History" }),
        historyBox,
        moreHistory(d.history.next)));
    });
  }

  function token() { return sessionStorage.getItem("effect-fsm-token") || ""; }

  function act(verb, target, status) {
    var what = target.kind === "timer" ? "timer " + target.name : "command " + target.seqNr + ":" + target.index;
    if (!window.confirm((verb === "redrive" ? "Re-drive" : "Discard for good") + " the dead-lettered " + what + " of " + target.instanceId + "?")) return;
    var headers = { "content-type": "application/json" };
    headers[meta.tokenHeader] = token();
    api("actions/" + verb, {}, { method: "POST", headers: headers, body: JSON.stringify(target) }).then(function () {
      // Shown above the refreshed list.
      notice = { text: (verb === "redrive" ? "re-driven: " : "discarded: ") + target.instanceId + " " + what, done: verb };
      return route();
    }).catch(function (error) {
      status.textContent = error.message;
      status.className = "error";
    });
  }

  function actions(target, status) {
    if (!meta.allowActions) return "-";
    return el("span", {},
      el("button", { type: "button", "data-action": "redrive", onclick: function () { act("redrive", target, status); }, text: "Re-drive" }), " ",
      el("button", { type: "button", class: "danger", "data-action": "discard", onclick: function () { act("discard", target, status); }, text: "Discard" }));
  }

  function deadLettersView(params) {
    var machine = params.get("machine") || meta.machines[0];
    return api("dead-letters", { machine: machine }).then(function (d) {
      var status = el("p", { "data-status": "", "data-done": notice === null ? null : notice.done, text: notice === null ? "" : notice.text });
      notice = null;
      var timers = d.timers.map(function (t) {
        return [link(t.instanceId, "instance", { machine: machine, id: t.instanceId }), t.name, t.stateTag, time(t.failedAt), String(t.attempts), t.lastError,
          actions({ kind: "timer", machine: machine, instanceId: t.instanceId, name: t.name }, status)];
      });
      var commands = d.commands.map(function (c) {
        return [link(c.instanceId, "instance", { machine: machine, id: c.instanceId }), c.seqNr + ":" + c.index, c.tag, c.kind, time(c.failedAt), String(c.attempts), c.lastError,
          actions({ kind: "command", machine: machine, instanceId: c.instanceId, seqNr: c.seqNr, index: c.index }, status)];
      });
      var tokenInput = el("input", { type: "password", placeholder: "token printed at start-up", value: token() });
      tokenInput.addEventListener("change", function () { sessionStorage.setItem("effect-fsm-token", tokenInput.value); });
      show(el("section", { "data-view": "dead-letters" },
        el("h2", { text: machine + ": dead letters" }),
        meta.allowActions ? el("label", {}, "Action token", tokenInput) : el("p", { class: "muted", text: "read-only: start with --allow-actions to re-drive or discard" }),
        status,
        el("h3", { text: "Timers" }),
        table(["Instance", "Timer", "State", "Failed", "Attempts", "Last error", ""], timers),
        el("h3", { text: "Commands" }),
        table(["Instance", "Command", "Tag", "Kind", "Failed", "Attempts", "Last error", ""], commands)));
    });
  }

  function route() {
    var hash = location.hash.replace(/^#\\/?/, "");
    var cut = hash.indexOf("?");
    var view = cut < 0 ? hash : hash.slice(0, cut);
    var params = new URLSearchParams(cut < 0 ? "" : hash.slice(cut + 1));
    show(el("p", { class: "muted", text: "Loading…" }));
    var run = view === "instances" ? instancesView : view === "instance" ? instanceView : view === "dead-letters" ? deadLettersView : machinesView;
    return run(params).catch(failed);
  }

  api("meta").then(function (m) {
    meta = m;
    mode.textContent = m.allowActions ? "actions allowed" : "read-only";
    nav.replaceChildren.apply(nav, [link("Machines", "", {})].concat(m.machines.map(function (name) {
      return el("span", {}, link(name + " instances", "instances", { machine: name }), " · ", link("dead letters", "dead-letters", { machine: name }));
    })));
    window.addEventListener("hashchange", route);
    return route();
  }).catch(failed);
})();
`

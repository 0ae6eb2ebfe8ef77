/** Reads the `_tag` literals of a tagged-union Schema from its AST. */
import type * as Schema from "effect/Schema"
import * as AST from "effect/SchemaAST"

const tagsOfAst = (ast: AST.AST, out: Array<string>): void => {
  switch (ast._tag) {
    case "Union":
      for (const member of ast.types) tagsOfAst(member, out)
      return
    case "Transformation":
      // Schema.Class and friends: the fields live on the encoded side.
      tagsOfAst(ast.from, out)
      return
    case "Refinement":
      tagsOfAst(ast.from, out)
      return
    case "Suspend":
      tagsOfAst(ast.f(), out)
      return
    case "TypeLiteral": {
      const tag = ast.propertySignatures.find((p) => p.name === "_tag")
      if (tag !== undefined && AST.isLiteral(tag.type) && typeof tag.type.literal === "string") {
        if (!out.includes(tag.type.literal)) out.push(tag.type.literal)
      }
      return
    }
    default:
      return
  }
}

/** The `_tag`s of the members of a tagged union, in declaration order. */
export const tagsOfSchema = (schema: Schema.Schema.Any): ReadonlyArray<string> => {
  const out: Array<string> = []
  tagsOfAst(schema.ast, out)
  return out
}

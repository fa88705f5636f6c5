"""Read the `Genotype(...)` text printed by pt.darts / emoDARTS into emoDARTS cells, with a real parser.

Only literals, lists, tuples and `range(a, b)` are accepted: anything else is refused, nothing is
executed (the reference code `eval`s it).
"""

from __future__ import annotations

import ast
from typing import Any

from nas.errors import GenomeError
from nas.genome import CellGenotype, Edge


def import_genotype(text: str) -> dict[str, CellGenotype]:
    """Parse a pt.darts / emoDARTS `Genotype(normal=..., normal_concat=..., ...)` string.

    Returns the cells by their emoDARTS names (`normal`, `reduce`, and `rnn` for the
    sequential cell). Accepts both the nested pt.darts form ([[(op, i), ...], ...] per node)
    and the flat DARTS form ([(op, i), ...], two edges per node). Only literals, lists,
    tuples and `range(a, b)` are accepted: anything else is refused, nothing is executed.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise GenomeError(f"Genotype text is not valid syntax: {exc.msg} (line {exc.lineno})") from exc
    call = tree.body
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "Genotype"):
        raise GenomeError("expected text of the form Genotype(normal=..., normal_concat=..., ...)")
    if call.args:
        raise GenomeError("Genotype(...) fields must be given by name (normal=..., reduce=...)")
    fields = {kw.arg: _literal(kw.value) for kw in call.keywords if kw.arg}
    cells: dict[str, CellGenotype] = {}
    for name, edges in fields.items():
        if name.endswith("_concat"):
            continue
        concat = fields.get(f"{name}_concat")
        if concat is None:
            raise GenomeError(f"Genotype has {name}= but no {name}_concat=")
        try:
            cells[name] = CellGenotype(nodes=_nodes(name, edges), concat=tuple(concat))
        except ValueError as exc:
            raise GenomeError(f"Genotype cell {name!r}: {exc}") from exc
    if "normal" not in cells or "reduce" not in cells:
        raise GenomeError("Genotype needs at least normal= and reduce= cells")
    return cells


def _nodes(name: str, edges: Any) -> tuple[tuple[Edge, ...], ...]:
    if not isinstance(edges, list) or not edges:
        raise GenomeError(f"Genotype cell {name!r} must be a non-empty list of edges")
    if all(_is_edge(e) for e in edges):  # flat DARTS form: two edges per node
        if len(edges) % 2:
            raise GenomeError(f"Genotype cell {name!r}: flat edge list needs two edges per node")
        edges = [edges[i : i + 2] for i in range(0, len(edges), 2)]
    if not all(isinstance(node, list) and node and all(_is_edge(e) for e in node) for node in edges):
        raise GenomeError(f"Genotype cell {name!r}: each node must be a list of ('op', input) pairs")
    return tuple(tuple(Edge(op=op, input=i) for op, i in node) for node in edges)


def _is_edge(value: Any) -> bool:
    return (
        isinstance(value, tuple | list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)
    )


def _literal(node: ast.expr) -> Any:
    match node:
        case ast.Constant(value=value) if isinstance(value, str | int):
            return value
        case ast.List(elts=elts):
            return [_literal(e) for e in elts]
        case ast.Tuple(elts=elts):
            return tuple(_literal(e) for e in elts)
        case ast.Call(func=ast.Name(id="range"), args=args, keywords=[]) if 1 <= len(args) <= 3:
            bounds = [_literal(a) for a in args]
            if not all(isinstance(b, int) for b in bounds):
                raise GenomeError("range(...) in a Genotype takes integers only")
            return list(range(*bounds))
    raise GenomeError(f"unsupported expression in Genotype text: {ast.unparse(node)!r}")

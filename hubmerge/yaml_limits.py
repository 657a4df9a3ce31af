"""How big a YAML document really is, with its aliases written out.

A few hundred bytes of aliases of aliases ("billion laughs") load as a small graph of shared lists, but
whatever walks it (an error message's ``repr``, ``json.dumps``) writes out every repetition: gigabytes.
Recipes and cards are small, so a document that expands past a limit is refused before anything walks it.
"""

from __future__ import annotations

__all__ = ["MAX_SIZE", "expanded_size"]

MAX_SIZE = 1_000_000  # a recipe of 100 models, or a card's front matter, is a few thousand


def expanded_size(data: object, limit: int = MAX_SIZE) -> int:
    """How much ``data`` writes out to once every alias is: one per mapping, list and scalar, a string one
    per character (one long string repeated is the same bomb), counted up to ``limit + 1``, in time linear
    in the loaded graph however far it would expand."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # being sized: met again below themselves, they are a recursive alias
    stack: list[tuple[object, bool]] = [(data, False)]
    while stack:  # children before their parent, without recursion (a document may nest deeply)
        node, children_done = stack.pop()
        if id(node) in sizes or (not children_done and id(node) in open_nodes):
            continue
        if isinstance(node, dict):
            children = [*node.keys(), *node.values()]
        elif isinstance(node, list):
            children = list(node)
        else:
            sizes[id(node)] = max(1, len(node)) if isinstance(node, str) else 1
            continue
        if children_done:
            # a child still unsized is the node itself or an ancestor: a recursive alias, endless when walked
            sizes[id(node)] = min(1 + sum(sizes.get(id(child), limit + 1) for child in children), limit + 1)
        else:
            open_nodes.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
    return sizes[id(data)]

#!/usr/bin/env python3
"""Finds import cycles between the proxy crate's top-level modules.

Every `crate::<module>` path in a module's non-test source (its file, or every file under its
folder, `#[cfg(test)]` blocks and `tests.rs` files left out) is an edge from that module to
`<module>`. Prints the edges and each strongly connected group of two or more modules (a cycle),
and exits 1 if there is one.

    scripts/module-cycles.py [proxy/src]
"""

import os
import re
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "proxy/src"
modules = {}
for name in sorted(os.listdir(root)):
    path = os.path.join(root, name)
    if name in ("lib.rs", "main.rs"):
        continue
    if name.endswith(".rs"):
        modules[name[:-3]] = [path]
    elif os.path.isdir(path):
        files = []
        for d, _, fs in os.walk(path):
            files += [os.path.join(d, f) for f in fs if f.endswith(".rs") and f != "tests.rs"]
        modules[name] = sorted(files)


def without_tests(text):
    """The source with `#[cfg(test)]` items (a `mod tests { ... }` block) cut out."""
    out, i = [], 0
    while True:
        j = text.find("#[cfg(test)]", i)
        if j < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:j])
        k, semi = text.find("{", j), text.find(";", j)
        if k < 0 or 0 <= semi < k:  # `#[cfg(test)] mod tests;` or a one-line item
            i = semi + 1 if semi >= 0 else len(text)
            continue
        depth, m = 0, k
        while m < len(text):
            if text[m] == "{":
                depth += 1
            elif text[m] == "}":
                depth -= 1
                if depth == 0:
                    break
            m += 1
        i = m + 1


edges = {m: set() for m in modules}
for m, files in modules.items():
    for f in files:
        with open(f, encoding="utf-8") as fh:
            text = without_tests(fh.read())
        # Comments (doc links included) import nothing.
        text = re.sub(r"//[^\n]*", "", text)
        # `crate::x` anywhere, and `crate::{x, y::z}` groups.
        for target in re.findall(r"crate::([a-z_]+)", text):
            if target in modules and target != m:
                edges[m].add(target)
        for group in re.findall(r"crate::\{([^}]*)\}", text):
            for target in re.findall(r"(?:^|[\s,{])([a-z_]+)(?=::|\s*[,}]|$)", group):
                if target in modules and target != m:
                    edges[m].add(target)

# Tarjan's strongly connected components.
index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]


def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in sorted(edges[v]):
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            on.discard(w)
            comp.append(w)
            if w == v:
                break
        comps.append(sorted(comp))


sys.setrecursionlimit(10000)
for v in sorted(edges):
    if v not in index:
        visit(v)

for m in sorted(edges):
    print(f"{m} -> {', '.join(sorted(edges[m])) or '(nothing)'}")
cycles = [c for c in comps if len(c) > 1]
if cycles:
    for c in cycles:
        print("cycle:", " <-> ".join(c))
    sys.exit(1)
print("no cycle between the modules of", root)

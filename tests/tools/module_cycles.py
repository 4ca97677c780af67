#!/usr/bin/env python3
"""Import cycles between the modules of a crate (issue 22): the graph of `crate::a::b`
paths in each file's code (comments and test modules left out), a module being a file
or directory under src/ (`depth` 1: the top level; 2: one level below too), `super::`
and `self::` paths resolved from the file's module. A module's own submodules do not
count (a parent declares its children, which name its items). Prints each cycle with its
edges; exits 1 if there is one.

    python3 tests/tools/module_cycles.py crates/ledger-store/src [depth]"""
import os, re, sys
from collections import defaultdict
src = sys.argv[1]
depth = int(sys.argv[2]) if len(sys.argv) > 2 else 1
mods = {}
for root, _, files in os.walk(src):
    for f in files:
        if not f.endswith('.rs') or f == 'tests.rs': continue
        path = os.path.join(root, f)
        rel = os.path.relpath(path, src)[:-3].split(os.sep)
        if rel[-1] == 'mod': rel = rel[:-1]
        if rel in (['lib'], ['main']): continue
        mods.setdefault('::'.join(rel[:depth]), []).append(path)
edges = defaultdict(set)
for m, paths in mods.items():
    for p in paths:
        text = open(p).read()
        text = re.sub(r'#\[cfg\(test\)\]\s*mod tests\s*\{.*', '', text, flags=re.S)
        text = re.sub(r'//[^\n]*', '', text)
        here = os.path.relpath(p, src)[:-3].split(os.sep)
        if here[-1] == 'mod' or here[-1] in ('lib', 'main'):
            here = here[:-1]
        parent = here[:-1]
        # `crate::a::b`, and `super::x` / `self::x` resolved from the file's module.
        paths = [h.group(1).split('::') for h in re.finditer(r'\bcrate::((?:\w+::)*\w+)', text)]
        paths += [parent + h.group(1).split('::') for h in re.finditer(r'\bsuper::((?:\w+::)*\w+)', text)]
        paths += [here + h.group(1).split('::') for h in re.finditer(r'\bself::((?:\w+::)*\w+)', text)]
        for grp in re.finditer(r'\b(crate|super)::\{([^;]*)\};', text, flags=re.S):
            base = [] if grp.group(1) == 'crate' else parent
            for item in re.split(r',\s*', re.sub(r'\{[^}]*\}', '', grp.group(2))):
                if item.strip():
                    paths.append(base + item.strip().split('::'))
        for parts in paths:
            for d in range(min(depth, len(parts)), 0, -1):
                t = '::'.join(parts[:d])
                if t in mods:
                    if t != m and not m.startswith(t + '::') and not t.startswith(m + '::'):
                        edges[m].add(t)
                    break
# Tarjan
index, low, on, stack, sccs, i = {}, {}, set(), [], [], [0]
def strong(v):
    index[v] = low[v] = i[0]; i[0] += 1; stack.append(v); on.add(v)
    for w in edges[v]:
        if w not in index: strong(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v: break
        sccs.append(comp)
sys.setrecursionlimit(10000)
for v in list(mods):
    if v not in index: strong(v)
cycles = [sorted(c) for c in sccs if len(c) > 1]
for c in cycles:
    print('cycle:', ' '.join(c))
    for a in c:
        print('  ', a, '->', ' '.join(sorted(t for t in edges[a] if t in c)))
print(f'{src} (depth {depth}): {len(mods)} modules, {sum(len(e) for e in edges.values())} edges, {len(cycles)} cycles')
sys.exit(1 if cycles else 0)

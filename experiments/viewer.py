"""The search-tree viewer: kept trees (``trees*.jsonl``, or one ``solve``) as one self-contained HTML file.

Scripts, styles and the trees are inline; the page loads nothing, so it opens offline and can be mailed.
A selector moves between problems and between the settings (model, method, budget, seed) of the
selected problem; the tree is a collapsible diagram of identical-sibling groups (``Tree.grouped``): each
row shows the PRM score, the count of identical siblings, the step text, the width the search gave it
(children its nodes were expanded with), the depth, the step check (✓/✗, where the dataset has an exact
checker) and, on a finished step, the answer and the grader's verdict. Beside it: the vote (every rule's
pick), each answer's tally and the candidates (a click reveals a candidate's path).

Wide trees stay usable: the first rows (breadth first) are drawn open and the rest collapsed; a group's
children are drawn when it is first opened, the first few of a long list with a "more" button. The URL
fragment ``#e=K`` opens entry K and ``#all`` draws every row (the browser test uses both).
"""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

from treesearch.config_mapping import ConfigError

from .trees import read_trees


def render_html(entries: Sequence[dict[str, Any]], title: str = "search trees") -> str:
    """One page for ``entries``: dicts with ``tree`` (a ``TreeExport.to_json()``) and optional labels
    ``problem_id``, ``model``, ``method``, ``budget``, ``seed``."""
    if not entries:
        raise ValueError("no trees to show")
    data = json.dumps({"title": title, "entries": list(entries)}, ensure_ascii=False, separators=(",", ":"))
    data = data.replace("<", "\\u003c")  # no "</script>" inside the data block
    return (_PAGE.replace("__TITLE__", html.escape(title)).replace("__CSS__", _CSS).replace("__JS__", _JS)
            .replace("__DATA__", data))


def select(entries: Iterable[dict[str, Any]], problems: Sequence[str] = (), methods: Sequence[str] = (),
           models: Sequence[str] = ()) -> list[dict[str, Any]]:
    def keep(e: dict[str, Any]) -> bool:
        return ((not problems or str(e.get("problem_id")) in problems) and (not methods or e.get("method") in methods)
                and (not models or e.get("model") in models))
    return [e for e in entries if keep(e)]


def view(results: str | Path, out: str | Path | None = None, problems: Sequence[str] = (),
         methods: Sequence[str] = (), models: Sequence[str] = ()) -> Path:
    """Write the viewer of a results directory's kept trees; returns the HTML file's path."""
    results = Path(results)
    if not results.is_dir():
        raise ConfigError(f"{results}: no such directory (give the results directory of `treesearch run`)")
    entries = read_trees(results)
    if not entries:
        raise ConfigError(f"{results}: no kept search trees (trees*.jsonl); run the study with store_trees: true "
                          f"(or a list of problem ids), or `treesearch run --store-trees`")
    chosen = select(entries, problems, methods, models)
    if not chosen:
        have = sorted({str(e.get("problem_id")) for e in entries})
        meths = sorted({str(e.get("method")) for e in entries})
        raise ConfigError(f"{results}: no kept tree matches the selection; problems kept: {', '.join(have[:20])}"
                          f"{' ...' if len(have) > 20 else ''}; methods: {', '.join(meths)}")
    path = Path(out) if out is not None else results / "trees.html"
    path.write_text(render_html(chosen, title=f"search trees: {results.name}"), encoding="utf-8")
    return path


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>__CSS__</style>
</head><body>
<header>
  <b class="brand">treesearch</b>
  <button id="prev" title="previous problem">&#9664;</button>
  <label>problem <select id="problem"></select></label>
  <button id="next" title="next problem">&#9654;</button>
  <label>setting <select id="setting"></select></label>
  <button id="expand">expand all</button>
  <button id="collapse">collapse</button>
</header>
<div id="summary"></div>
<main>
  <section id="treepane"><ul class="tree" id="tree"></ul></section>
  <aside id="side">
    <h3>Vote</h3><table id="votes"></table>
    <h3>Answers</h3><table id="tally"></table>
    <h3>Candidates <small>(one row per path; click: show it)</small></h3><table id="candidates"></table>
  </aside>
</main>
<script type="application/json" id="data">__DATA__</script>
<script>__JS__</script>
</body></html>
"""

_CSS = """
*{box-sizing:border-box}
body{margin:0;font:13px/1.35 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1d2430;background:#fafbfc}
header{position:sticky;top:0;z-index:2;display:flex;gap:8px;align-items:center;flex-wrap:wrap;padding:6px 12px;
  background:#24303f;color:#fff}
header .brand{margin-right:6px}
header select{max-width:32em}
header button,header select{font:inherit}
#summary{padding:8px 12px;border-bottom:1px solid #d9dee5;background:#fff}
#summary .q{font-family:ui-monospace,"DejaVu Sans Mono",monospace;white-space:pre-wrap;font-size:14px}
#summary .stats{color:#4b5565;margin-top:3px}
main{display:flex;align-items:flex-start;gap:0}
#treepane{flex:1 1 auto;min-width:0;padding:6px 8px 40px 4px}
#side{flex:0 0 390px;position:sticky;top:44px;max-height:calc(100vh - 50px);overflow:auto;padding:6px 12px;
  border-left:1px solid #d9dee5;background:#fff}
#side h3{margin:10px 0 4px;font-size:13px}
#side small{font-weight:normal;color:#6b7585}
table{border-collapse:collapse;width:100%}
td,th{padding:2px 5px;border-bottom:1px solid #eceff3;text-align:left;white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr.pick td{font-weight:600}
#candidates tr{cursor:pointer}
#candidates tr:hover td{background:#eef4ff}
ul.tree,ul.kids{list-style:none;margin:0;padding:0}
ul.kids{margin-left:13px;padding-left:9px;border-left:1px dotted #aab3c0;display:none}
li.open>ul.kids{display:block}
.row{display:flex;align-items:baseline;gap:6px;padding:1px 4px;border-radius:3px;min-height:20px}
.row:hover{background:#eef2f7}
.row.hl{background:#fff3c4}
.tog{width:12px;flex:0 0 12px;color:#4b5565;cursor:pointer;user-select:none;text-align:center}
.score{flex:0 0 46px;text-align:center;border-radius:3px;font-variant-numeric:tabular-nums;font-size:12px;
  padding:0 2px}
.score.none{color:#8a93a0;background:#eef0f3}
.cnt{flex:0 0 auto;font-size:11px;font-weight:600;color:#fff;background:#5b6b82;border-radius:8px;padding:0 6px}
.chk{flex:0 0 14px;font-weight:700;text-align:center}
.chk.ok{color:#1a7f37}.chk.bad{color:#c62828}
.txt{font-family:ui-monospace,"DejaVu Sans Mono",monospace;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;
  min-width:0;flex:0 1 auto;cursor:text}
.txt.full{white-space:pre-wrap;word-break:break-word}
.ans{flex:0 0 auto;font-weight:600;border-radius:3px;padding:0 5px;background:#e7ebf0}
.ans.right{background:#d3f2dc;color:#14532d}.ans.wrong{background:#fbdada;color:#7f1d1d}
.stop{flex:0 0 auto;border-radius:3px;padding:0 5px;background:#fde9c8;color:#7c2d12}
.meta{flex:0 0 auto;color:#6b7585;font-size:11px;margin-left:auto;padding-left:8px;white-space:nowrap}
.root>.row .txt{font-weight:600}
li.more button{margin:2px 0 2px 22px;font:inherit;font-size:12px}
.yes{color:#1a7f37;font-weight:700}.no{color:#c62828;font-weight:700}
.legend{color:#6b7585;font-size:12px}
"""

_JS = r"""
(function () {
"use strict";
var DATA = JSON.parse(document.getElementById("data").textContent);
var E = DATA.entries, OPEN_ROWS = 300, SHOWN = 24;
var problems = [], byProblem = {};
function pkey(e) { return String(e.problem_id === undefined ? "" : e.problem_id); }
E.forEach(function (e, i) {
  var k = pkey(e);
  if (!(k in byProblem)) { byProblem[k] = []; problems.push(k); }
  byProblem[k].push(i);
});
function $(id) { return document.getElementById(id); }
function el(tag, cls, text) {
  var x = document.createElement(tag);
  if (cls) x.className = cls;
  if (text !== undefined && text !== null) x.textContent = text;
  return x;
}
function fmt(s) { return s === undefined || s === null ? "\u2013" : Number(s).toFixed(3); }
function color(s) {
  var v = Math.max(0, Math.min(1, Number(s)));
  return "hsl(" + Math.round(120 * v) + ",62%," + (80 - 8 * Math.abs(v - 0.5)) + "%)";
}
function label(e) {
  var parts = [];
  if (e.model !== undefined) parts.push(e.model);
  if (e.method !== undefined) parts.push(e.method);
  if (e.budget !== undefined) parts.push("b=" + e.budget);
  if (e.seed !== undefined) parts.push("seed " + e.seed);
  return parts.join(" \u00b7 ") || "tree";
}
function mark(v) { return v === true ? "\u2713" : v === false ? "\u2717" : ""; }

var cur = -1, T = null, kids = null, byId = null, liOf = null;

function show(index, all) {
  cur = index; var e = E[index]; T = e.tree;
  kids = {}; byId = {}; liOf = {};
  T.groups.forEach(function (g) {
    byId[g.id] = g;
    if (g.parent !== undefined && g.parent !== null) (kids[g.parent] = kids[g.parent] || []).push(g);
  });
  Object.keys(kids).forEach(function (k) {  // best score first; unscored last; stable
    kids[k] = kids[k].map(function (g, i) { return [g, i]; }).sort(function (a, b) {
      var sa = a[0].score, sb = b[0].score;
      if (sa === undefined && sb === undefined) return a[1] - b[1];
      if (sa === undefined) return 1;
      if (sb === undefined) return -1;
      return sb - sa || a[1] - b[1];
    }).map(function (p) { return p[0]; });
  });
  selectors();
  summary(e);
  var tree = $("tree"); tree.textContent = "";
  var root = T.groups[0], li = node(root);
  li.classList.add("root"); tree.appendChild(li);
  if (all) { openAll(li); }
  else {  // breadth first, until OPEN_ROWS rows are drawn
    var queue = [li], drawn = 1;
    while (queue.length) {
      var x = queue.shift(), ks = kids[x.gid] || [];
      if (!ks.length || drawn + Math.min(ks.length, SHOWN) > OPEN_ROWS && x !== li) continue;
      setOpen(x, true, false);
      drawn += Math.min(ks.length, SHOWN);
      Array.prototype.forEach.call(x.lastChild.children, function (c) { if (c.gid !== undefined) queue.push(c); });
    }
  }
  side();
  var h = "e=" + index + (all ? "&all" : "");
  if (location.hash.slice(1) !== h) history.replaceState(null, "", "#" + h);
}

function node(g) {
  var li = el("li", "node"), row = el("div", "row"), ks = kids[g.id] || [];
  li.gid = g.id;
  li.dataset.gid = g.id; li.dataset.count = g.n; li.dataset.depth = g.depth;
  if (g.score !== undefined) li.dataset.score = fmt(g.score);
  var tog = el("span", "tog", ks.length ? "\u25b8" : "");
  tog.onclick = function () { setOpen(li, !li.classList.contains("open"), false); };
  row.appendChild(tog);
  if (g.parent === undefined || g.parent === null) {
    row.appendChild(el("span", "score none", "Q"));
  } else {
    var sc = el("span", "score" + (g.score === undefined ? " none" : ""), fmt(g.score));
    if (g.score !== undefined) sc.style.background = color(g.score);
    sc.title = "PRM score of this step";
    row.appendChild(sc);
  }
  if (g.n > 1) { var c = el("span", "cnt", "\u00d7" + g.n); c.title = g.n + " identical siblings"; row.appendChild(c); }
  if (g.ok !== undefined) {
    var k = el("span", "chk " + (g.ok ? "ok" : "bad"), mark(g.ok));
    k.title = g.ok ? "checker: every step so far right" : "checker: a step so far is wrong";
    row.appendChild(k);
  }
  var t = el("span", "txt", String(g.text).replace(/\s+$/, "").replace(/\n/g, " \u21b5 "));
  t.title = g.text; t.onclick = function () { t.classList.toggle("full"); };
  row.appendChild(t);
  if (g.terminal) {
    var a = el("span", "ans" + (g.right === true ? " right" : g.right === false ? " wrong" : ""),
               "\u21d2 " + (g.answer === undefined ? "(no answer: " + (g.finish || "cut") + ")" : g.answer) +
               (g.right === undefined ? "" : " " + mark(g.right)));
    row.appendChild(a);
  }
  if (g.finish === "stopped") {
    var st = el("span", "stop", "stopped");
    st.title = "the search stopped this trace here (its confidence fell below the threshold): no candidate";
    row.appendChild(st);
  }
  var meta = [];
  if (g.width) meta.push("w " + g.width);
  meta.push("d " + g.depth);
  if (g.parent === undefined || g.parent === null) meta.push(T.nodes + " nodes");
  row.appendChild(el("span", "meta", meta.join(" \u00b7 ")));
  li.appendChild(row);
  li.appendChild(el("ul", "kids"));
  liOf[g.id] = li;
  return li;
}

function fill(li, all) {
  var ul = li.lastChild, ks = kids[li.gid] || [];
  if (li.filled === undefined) li.filled = 0;
  var upto = all ? ks.length : Math.min(ks.length, Math.max(li.filled, SHOWN));
  var more = ul.querySelector(":scope > li.more");
  if (more) ul.removeChild(more);
  for (var i = li.filled; i < upto; i++) ul.appendChild(node(ks[i]));
  li.filled = upto;
  if (upto < ks.length) {
    var m = el("li", "more"), b = el("button", "", "show " + (ks.length - upto) + " more");
    b.onclick = function () { fill(li, true); };
    m.appendChild(b); ul.appendChild(m);
  }
}
function setOpen(li, open, all) {
  if (!(kids[li.gid] || []).length) return;
  if (open) fill(li, all);
  li.classList.toggle("open", open);
  li.firstChild.firstChild.textContent = open ? "\u25be" : "\u25b8";
}
function openAll(li) {
  setOpen(li, true, true);
  Array.prototype.forEach.call(li.lastChild.children, function (c) { if (c.gid !== undefined) openAll(c); });
}
function reveal(gid) {
  var chain = [];
  for (var g = byId[gid]; g; g = (g.parent === undefined || g.parent === null) ? null : byId[g.parent]) chain.unshift(g.id);
  Array.prototype.forEach.call(document.querySelectorAll(".row.hl"), function (r) { r.classList.remove("hl"); });
  chain.forEach(function (id, i) {
    var li = liOf[id];
    if (i + 1 < chain.length) { setOpen(li, true, !liOf[chain[i + 1]]); }
    li.firstChild.classList.add("hl");
  });
  liOf[gid].firstChild.scrollIntoView({block: "center"});
}

function selectors() {
  var k = pkey(E[cur]);
  var ps = $("problem"); ps.textContent = "";
  problems.forEach(function (p) {
    var o = el("option", "", (p || "question") + "  (" + byProblem[p].length + ")"); o.value = p;
    ps.appendChild(o);
  });
  ps.value = k;
  var ss = $("setting"); ss.textContent = "";
  byProblem[k].forEach(function (i) { var o = el("option", "", label(E[i])); o.value = i; ss.appendChild(o); });
  ss.value = String(cur);
  $("prev").disabled = problems.indexOf(k) <= 0;
  $("next").disabled = problems.indexOf(k) >= problems.length - 1;
}
function goProblem(p) {
  var want = label(E[cur]), list = byProblem[p], pick = list[0];
  list.forEach(function (i) { if (label(E[i]) === want) pick = i; });
  show(pick, false);
}

function summary(e) {
  var s = $("summary"); s.textContent = "";
  s.appendChild(el("div", "q", T.question));
  var st = el("div", "stats");
  var bits = [];
  if (e.problem_id !== undefined) bits.push("problem " + e.problem_id);
  bits.push(label(e));
  if (T.gold !== undefined) bits.push("gold answer " + T.gold);
  st.appendChild(document.createTextNode(bits.join(" \u00b7 ") + " \u00b7 "));
  var n = el("span", "", String(T.nodes)); n.id = "node-count"; st.appendChild(n);
  st.appendChild(document.createTextNode(" nodes in " + T.groups.length + " rows (identical siblings grouped) \u00b7 " +
                                         T.candidates.length + " candidates"));
  s.appendChild(st);
  var stops = T.groups.some(function (g) { return g.finish === "stopped"; });
  s.appendChild(el("div", "legend", "row: PRM score \u00b7 \u00d7count of identical siblings \u00b7 checker \u2713/\u2717 \u00b7 " +
                   "step text \u00b7 \u21d2 answer (grader \u2713/\u2717) \u00b7 w = width the search gave it (children), d = depth" +
                   (stops ? " \u00b7 stopped = the search dropped the trace there (no candidate)" : "")));
}

function row(table, cells, head) {
  var tr = el("tr");
  cells.forEach(function (c) {
    var td = el(head ? "th" : "td", c[1] || "", c[0]);
    tr.appendChild(td);
  });
  table.appendChild(tr); return tr;
}
function verdict(v) { return [mark(v), v === true ? "yes" : v === false ? "no" : ""]; }
function side() {
  var v = $("votes"); v.textContent = "";
  row(v, [["rule"], ["answer"], ["right"]], true);
  T.votes.forEach(function (x) {
    var tr = row(v, [[x.key], [x.answer === undefined ? "(none)" : x.answer], verdict(x.right)]);
    tr.className = "vote"; tr.dataset.key = x.key; tr.dataset.answer = x.answer === undefined ? "" : x.answer;
  });
  var t = $("tally"); t.textContent = "";
  row(t, [["answer"], ["count", "num"], ["\u03a3 last", "num"], ["\u03a3 min", "num"], ["best", "num"], ["right"]], true);
  T.tally.forEach(function (x) {
    row(t, [[x.answer], [String(x.count), "num"], [fmt(x.weight_last || 0), "num"], [fmt(x.weight_min || 0), "num"],
            [fmt(x.best || 0), "num"], verdict(x.right)]).className = "tally";
  });
  var c = $("candidates"); c.textContent = "";  // candidates on one path (identical solutions) share a row
  row(c, [["n", "num"], ["answer"], ["last", "num"], ["min", "num"], ["tokens", "num"], ["end"], ["right"]], true);
  var rows = [], at = {};
  T.candidates.forEach(function (x) {
    if (!(x.group in at)) { at[x.group] = rows.length; rows.push({x: x, n: 0}); }
    rows[at[x.group]].n += 1;
  });
  rows.forEach(function (r) {
    var x = r.x, s = x.scores || [];
    var tr = row(c, [["\u00d7" + r.n, "num"], [x.answer === undefined ? "\u2013" : x.answer],
                     [s.length ? fmt(s[s.length - 1]) : "\u2013", "num"],
                     [s.length ? fmt(Math.min.apply(null, s)) : "\u2013", "num"], [String(x.tokens), "num"],
                     [x.finish || ""], verdict(x.right)]);
    tr.className = "cand"; tr.dataset.count = r.n; tr.title = "click: show this path in the tree";
    tr.onclick = function () { reveal(x.group); };
  });
}

$("problem").onchange = function () { goProblem(this.value); };
$("setting").onchange = function () { show(Number(this.value), false); };
$("prev").onclick = function () { var i = problems.indexOf(pkey(E[cur])); if (i > 0) goProblem(problems[i - 1]); };
$("next").onclick = function () { var i = problems.indexOf(pkey(E[cur])); if (i + 1 < problems.length) goProblem(problems[i + 1]); };
$("expand").onclick = function () { show(cur, true); };
$("collapse").onclick = function () {
  show(cur, false);
  Array.prototype.forEach.call(document.querySelectorAll("#tree li.open"), function (li) {
    if (!li.classList.contains("root")) setOpen(li, false, false);
  });
};
var params = {};
location.hash.slice(1).split("&").forEach(function (p) { var kv = p.split("="); if (kv[0]) params[kv[0]] = kv.length > 1 ? kv[1] : ""; });
var start = Number(params.e || 0);
show(start >= 0 && start < E.length ? start : 0, "all" in params);
})();
"""

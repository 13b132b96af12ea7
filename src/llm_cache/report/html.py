"""The HTML report: one self-contained page made from the report model, nothing else.

No external script, style, font or image: the page opens offline from a CI artifact, and its
Content-Security-Policy forbids loading anything. Every value from the report is escaped.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from ..stats import Counts
from ..values import format_age, format_duration
from .html_parts import esc, histogram_svg, table, word_diff
from .model import AGE_BUCKETS, Inventory, Report, cost_saved
from .text import _size, refresh_command

__all__ = ["report_html"]

_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"

_STYLE = """
:root { --fg: #1f2328; --muted: #656d76; --line: #d0d7de; --soft: #f6f8fa; --accent: #0969da;
        --del: #ffebe9; --del-fg: #82071e; --ins: #dafbe1; --ins-fg: #116329; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); }
header, main { max-width: 1100px; margin: 0 auto; padding: 0 24px; }
header { padding-top: 24px; border-bottom: 1px solid var(--line); }
h1 { margin: 0 0 4px; font-size: 24px; }
h2 { margin: 32px 0 8px; font-size: 18px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { margin: 16px 0 6px; font-size: 15px; }
nav { margin: 8px 0 12px; display: flex; flex-wrap: wrap; gap: 4px 14px; }
nav a { color: var(--accent); text-decoration: none; }
.muted, .note { color: var(--muted); }
code, pre { font: 12px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
code { overflow-wrap: anywhere; }
dl.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 8px; margin: 0; }
.figure { border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px; background: var(--soft); }
.figure dt { color: var(--muted); font-size: 12px; }
.figure dd { margin: 0; font-size: 18px; font-weight: 600; overflow-wrap: anywhere; }
.figure dd small { display: block; font-size: 12px; font-weight: 400; color: var(--muted); }
.figure.wide { grid-column: 1 / -1; }
table { border-collapse: collapse; width: 100%; margin: 4px 0 8px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
th[data-sort] { cursor: pointer; user-select: none; }
th[data-sort]::after { content: " \\2195"; color: var(--muted); }
th[aria-sort="ascending"]::after { content: " \\2191"; color: var(--fg); }
th[aria-sort="descending"]::after { content: " \\2193"; color: var(--fg); }
.drift { border: 1px solid var(--line); border-radius: 6px; margin: 12px 0; }
.drift > p { margin: 0; padding: 6px 10px; background: var(--soft); border-bottom: 1px solid var(--line); }
.sides { display: grid; grid-template-columns: 1fr 1fr; }
.side { padding: 6px 10px; min-width: 0; }
.side + .side { border-left: 1px solid var(--line); }
.side h4 { margin: 0 0 4px; font-size: 12px; color: var(--muted); font-weight: 600; }
.side pre { margin: 0; white-space: pre-wrap; overflow-wrap: anywhere; }
del { background: var(--del); color: var(--del-fg); text-decoration: line-through; }
ins { background: var(--ins); color: var(--ins-fg); text-decoration: none; }
.histogram { display: block; max-width: 100%; height: auto; margin: 4px 0 12px; }
.histogram .bar { fill: var(--accent); }
.histogram .axis { stroke: var(--line); }
.histogram text { font-size: 11px; fill: var(--fg); }
.histogram text.label { fill: var(--muted); }
footer { max-width: 1100px; margin: 32px auto; padding: 0 24px; color: var(--muted); font-size: 12px; }
"""

# Sorts a table.sortable by a th[data-sort] clicked: numbers by value, text by code points;
# ties keep the page's order, and a second click on the same header gives the exact reverse.
_SCRIPT = """
(function () {
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var heads = table.querySelectorAll("th[data-sort]");
    heads.forEach(function (th) {
      function sort() {
        var body = table.tBodies[0], column = th.cellIndex, numeric = th.dataset.sort === "number";
        var descending = th.getAttribute("aria-sort") === "ascending";
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = a.cells[column].dataset.value, y = b.cells[column].dataset.value;
          var d = numeric ? Number(x) - Number(y) : (x < y ? -1 : x > y ? 1 : 0);
          return d || Number(a.dataset.order) - Number(b.dataset.order);
        });
        if (descending) { rows.reverse(); }
        heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", descending ? "descending" : "ascending");
        rows.forEach(function (row) { body.appendChild(row); });
      }
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sort(); }
      });
    });
  });
})();
"""

_COUNT_COLUMNS = ("hits", "misses", "recorded", "refreshed", "stale")


def _when(value: datetime | None) -> str:
    if value is None:
        return '<span class="muted">-</span>'
    return f'<time datetime="{esc(value.isoformat())}">{esc(value.strftime("%Y-%m-%d %H:%M:%S %Z").strip())}</time>'


def _figure(name: str, value: object, note: str = "", wide: bool = False) -> str:
    """One figure: ``value`` plain text, ``note`` markup shown under it."""
    cls = "figure wide" if wide else "figure"
    small = f"<small>{note}</small>" if note else ""
    return f'<div class="{cls}" data-figure="{esc(name)}"><dt>{esc(name)}</dt><dd>{esc(value)}{small}</dd></div>'


def _section(ident: str, title: str, body: str) -> str:
    return f'<section id="{ident}">\n<h2>{esc(title)}</h2>\n{body}\n</section>'


def _figures(report: Report) -> str:
    stats, c = report.stats, report.stats.counts
    size = _figure("bytes", _size(report.bytes), f"{report.bytes} bytes")
    if report.mode == "-":
        items = [_figure("store", report.location, wide=True), _figure("entries", report.entries), size]
        if report.inventory is not None:
            items.append(_figure("expired", report.inventory.expired))
        items.append(_figure("TTL", format_duration(report.ttl)))
        return '<dl class="figures">\n' + "\n".join(items) + "\n</dl>"
    why = ", ".join(f"{esc(reason)} {n}" for reason, n in sorted(stats.not_stored_reasons.items()))
    tokens = sum(stats.tokens_saved.values())
    per_model = ", ".join(f"{esc(m)} {t}" for m, t in sorted(stats.tokens_saved.items()))
    items = [
        _figure("store", report.location, wide=True),
        _figure("mode", report.mode),
        _figure("entries", report.entries),
        size,
        _figure("tests", stats.tests_used),
        *(_figure(name, getattr(c, name)) for name in _COUNT_COLUMNS),
        _figure("not stored", c.not_stored, why),
        _figure("hit rate", f"{c.hit_rate:.0%}"),
        _figure("tokens served", tokens, per_model),
    ]
    if report.prices:
        total, _, unpriced = cost_saved(report)
        note = f"{len(unpriced)} without a price: {esc(', '.join(unpriced))}" if unpriced else "at llm_cache_prices"
        items.append(_figure("cost saved", f"${total:.6f}", note))
    if report.cap.active:
        items.append(_figure("evicted", stats.evicted))
    if c.corrupt:
        items.append(_figure("corrupt", c.corrupt))
    if stats.warmed:
        items.append(_figure("warmed", stats.warmed, f"in {stats.warm_seconds:.2f} s"))
    body = '<dl class="figures">\n' + "\n".join(items) + "\n</dl>"
    if stats.cap_short:
        body += '\n<p class="note">The cap is smaller than what this session used; nothing it used was evicted.</p>'
    return body


def _test_row(order: int, test_id: str, counts: Counts) -> str:
    cells = [f'<td class="test-id" data-value="{esc(test_id)}"><code>{esc(test_id)}</code></td>']
    for name in _COUNT_COLUMNS:
        n = getattr(counts, name)
        cells.append(f'<td class="num {name}" data-value="{n}">{n}</td>')
    return f'<tr class="test-row" data-order="{order}">' + "".join(cells) + "</tr>"


def _tests(report: Report) -> str:
    tests = sorted(report.stats.tests.items())
    if not tests:
        return '<p class="muted">No test used the cache.</p>'
    heads = ['<th data-sort="text" data-column="test" tabindex="0">test</th>']
    heads.extend(f'<th class="num" data-sort="number" data-column="{n}" tabindex="0">{n}</th>' for n in _COUNT_COLUMNS)
    rows = "\n".join(_test_row(i, test_id, counts) for i, (test_id, counts) in enumerate(tests))
    return (
        '<p class="note">Click a column header to sort by it; click again to reverse.</p>\n'
        f'<table class="sortable" id="tests-table"><thead><tr>{"".join(heads)}</tr></thead>\n'
        f"<tbody>\n{rows}\n</tbody></table>"
    )


def _misses(report: Report) -> str:
    stats = report.stats
    if not stats.misses_detail and not stats.counts.misses:
        return '<p class="muted">None: every request replayed found its cassette.</p>'
    rows = []
    for m in stats.misses_detail:
        closest = f"<code>{esc(m.closest)}</code>" if m.closest else (
            '<span class="muted">no stored request for this model and endpoint</span>')
        differs = ", ".join(f"<code>{esc(d)}</code>" for d in m.differences) or '<span class="muted">-</span>'
        rows.append([f'<code class="test-id">{esc(m.test_id)}</code>', esc(m.model or "-"), f"<code>{esc(m.endpoint)}</code>",
                     f'<code class="key">{esc(m.key)}</code>', closest, differs])
    body = table(("test", "model", "endpoint", "key", "closest stored request", "differs in"), rows, "misses")
    more = stats.counts.misses - len(stats.misses_detail)
    if more > 0:
        body += f'\n<p class="note">... and {more} more, not kept.</p>'
    return body + '\n<p class="note">Record them with <code>--llm-cache=record</code>.</p>'


def _drift(report: Report) -> str:
    if not report.stats.drift:
        return '<p class="muted">None: no re-recorded answer changed.</p>'
    items = [('<p class="note">Answers re-recorded by a refresh that changed: words removed are struck out, '
              "words added are marked.</p>")]
    for d in report.stats.drift:
        old, new = word_diff(d.old, d.new)
        items.append(
            f'<div class="drift" data-test="{esc(d.test_id)}" data-key="{esc(d.key)}" data-field="{esc(d.field)}">\n'
            f'<p><code class="test-id">{esc(d.test_id)}</code> <span class="muted">key</span> '
            f'<code class="key" title="{esc(d.key)}">{esc(d.key[:12])}</code> <span class="muted">field</span> '
            f'<code class="field">{esc(d.field)}</code></p>\n<div class="sides">'
            f'<div class="side old"><h4>old</h4><pre>{old}</pre></div>'
            f'<div class="side new"><h4>new</h4><pre>{new}</pre></div></div>\n</div>'
        )
    return "\n".join(items)


def _unused(report: Report) -> str:
    unused = report.unused
    policy = f'<p class="policy">Policy: <code>llm_cache_unused = {esc(report.unused_policy)}</code></p>'
    if unused is None:
        why = "llm_cache_unused = off" if report.unused_policy == "off" else "not a whole test run"
        return f'<p class="unused-status">Not looked for ({esc(why)}).</p>\n{policy}'
    if not unused.known:
        return f'<p class="unused-status">Cannot tell: {esc(unused.why_not)}.</p>\n{policy}'
    if not unused.entries:
        return f'<p class="unused-status">None: every cassette was used.</p>\n{policy}'
    rows = [[f"<code>{esc(m.location)}</code>", f'<code class="key">{esc(m.key)}</code>', esc(m.model_version),
             f'<span title="{m.size} bytes">{esc(_size(m.size))}</span>'] for m in unused.entries]
    n = len(unused.entries)
    status = f"{n} cassette{'' if n == 1 else 's'} no test used"
    if report.unused_failed:
        status += ", failing the run"
    where = report.report_path or "REPORT.json"
    after = "" if report.report_path else " after a run with <code>--llm-cache-report=REPORT.json</code>"
    return (
        f'<p class="unused-status">{esc(status)}.</p>\n{policy}\n'
        + table(("cassette", "key", "model version", "size"), rows, "unused")
        + f'\n<p class="note">Remove them with <code>llm-cache prune --unused-in {esc(where)}</code>{after}.</p>'
    )


def _stale(report: Report) -> str:
    if not report.stats.stale_uses:
        return '<p class="muted">None: no test met a cassette past the TTL.</p>'
    rows = []
    for u in report.stats.stale_uses:
        ttl = format_duration(timedelta(seconds=u.ttl_seconds) if u.ttl_seconds is not None else None)
        outcome = '<span class="failed">failed</span>' if u.failed else '<span class="served">served</span>'
        rows.append([f"<code>{esc(u.location)}</code>", esc(format_age(u.age_seconds)), esc(ttl),
                     f'<code class="test-id">{esc(u.test_id)}</code>', outcome])
    return (
        f'<p class="policy">Policy: <code>llm_cache_stale = {esc(report.stale_policy)}</code>; '
        f"re-record them with <code>{esc(refresh_command(report))}</code>.</p>\n"
        + table(("cassette", "age", "TTL", "test", "outcome"), rows, "stale")
    )


def _inventory(inventory: Inventory) -> str:
    labels = [label for label, _ in AGE_BUCKETS]
    rows = [
        [esc(v.model_version), f'<span title="{v.entries}">{v.entries}</span>',
         f'<span title="{v.bytes} bytes">{esc(_size(v.bytes))}</span>', str(v.expired), str(v.unreadable),
         _when(v.oldest), _when(v.newest)]
        for v in inventory.versions
    ]
    parts = [
        (f'<p>Store <code>{esc(inventory.location)}</code> at {_when(inventory.taken_at)}, TTL '
         f"{esc(format_duration(inventory.ttl))}: {inventory.entries} entries, {esc(_size(inventory.bytes))}, "
         f"{inventory.expired} expired.</p>"),
        table(("model version", "entries", "bytes", "expired", "unreadable", "oldest", "newest"), rows, "inventory"),
    ]
    for v in inventory.versions:
        parts.append(
            f'<div class="version" data-model-version="{esc(v.model_version)}">'
            f"<h3>Ages of <code>{esc(v.model_version)}</code></h3>\n"
            + histogram_svg(f"ages of the cassettes of {v.model_version}", labels, v.ages)
            + "</div>"
        )
    return "\n".join(parts)


def _unseen(report: Report) -> str:
    rows = [[f"<code>{esc(u.host)}</code>", f'<code class="test-id">{esc(u.test_id)}</code>'] for u in report.stats.unseen]
    return (
        '<p class="note">Connections no patched client saw: nothing of them was recorded. Make them through a '
        "client the cache can see, or allow their hosts with <code>llm_cache_allowed_hosts</code>.</p>\n"
        + table(("host", "test"), rows, "unseen")
    )


def report_html(report: Report) -> str:
    """The report as one self-contained HTML5 document; the same report gives the same page."""
    stats = report.stats
    run = report.mode != "-"
    sections: list[tuple[str, str, str]] = [("figures", "Figures", _figures(report))]
    if run:
        sections.append(("tests", "Tests", _tests(report)))
        sections.append(("misses", f"Misses ({stats.counts.misses})", _misses(report)))
        sections.append(("drift", f"Drift ({len(stats.drift)})", _drift(report)))
        if stats.unseen:
            sections.append(("unseen", f"Unseen ({len(stats.unseen)})", _unseen(report)))
        sections.append(("stale", f"Stale cassettes ({len(stats.stale_uses)})", _stale(report)))
        sections.append(("unused", "Unused cassettes", _unused(report)))
    if report.inventory is not None:
        sections.append(("inventory", "Inventory", _inventory(report.inventory)))
    nav = " ".join(f'<a href="#{ident}">{esc(title)}</a>' for ident, title, _ in sections)
    body = "\n".join(_section(ident, title, content) for ident, title, content in sections)
    subtitle = f"mode {report.mode}" if run else "store inventory"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{esc(_CSP)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>llm-cache report</title>
<style>{_STYLE}</style>
</head>
<body>
<header>
<h1>llm-cache report</h1>
<p class="muted">{esc(subtitle)}, <code>{esc(report.location)}</code>, created {_when(report.created_at)}</p>
<nav>{nav}</nav>
</header>
<main>
{body}
</main>
<footer>Made by pytest-llm-cache; this page loads nothing from anywhere.</footer>
<script>{_SCRIPT}</script>
</body>
</html>
"""

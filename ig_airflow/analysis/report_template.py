"""The HTML page of :mod:`ig_airflow.analysis.report`: one Jinja2 template rendered with
autoescaping, so every string taken from a run (feature, layer and column names, ids, URIs,
alert texts) reaches the page escaped. Only the template's own markup is HTML, including the
static script at its end that records how many images loaded (``data-images`` and
``data-images-loaded`` on ``<body>``, read by the headless-browser test).

The context (built by ``build_report``): ``title``; ``importance`` (``figure``, ``table``);
``layers`` (``name``, ``units``, ``silent``, ``figure``); ``drift`` (``reference``, ``alerts``
of ``metric``/``value``/``threshold``/``features``, ``metrics`` of ``ndcg``/``spearman``/
``entered``/``left``, ``figure``, ``table``) or None; ``over_time`` (a figure) or None;
``waterfalls`` (figures). A figure is ``src`` and ``caption``; a table is ``columns`` and
``rows`` of already formatted cells.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

REPORT_TEMPLATE = """<!doctype html>
{%- macro figure(f) %}
<figure><img src="{{ f.src }}" alt="{{ f.caption }}"><figcaption>{{ f.caption }}</figcaption></figure>
{%- endmacro %}
{%- macro table(t) %}
<table class="data"><thead><tr>{% for c in t.columns %}<th>{{ c }}</th>{% endfor %}</tr></thead>
<tbody>
{%- for row in t.rows %}
<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>
{%- endfor %}
</tbody></table>
{%- endmacro %}
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body { font-family: sans-serif; max-width: 980px; margin: 2em auto; color: #222; }
table.data { border-collapse: collapse; font-size: 13px; margin: 1em 0; }
table.data td, table.data th { padding: 3px 8px; border-bottom: 1px solid #ddd; text-align: right; }
.alert { background: #fdecea; border-left: 4px solid #c44e52; padding: 0.5em 1em; }
.ok { color: #2e7d32; }
figure { margin: 1em 0; } img { max-width: 100%; }
</style></head>
<body><h1>{{ title }}</h1>
{{ figure(importance.figure) }}
{{ table(importance.table) }}
{%- for layer in layers %}
<h2>Layer <code>{{ layer.name }}</code></h2>
<p>{{ layer.units }} units; {{ layer.silent }} with no attribution on any explained row.</p>
{{ figure(layer.figure) }}
{%- endfor %}
{%- if drift %}
<h2>Drift</h2><p>reference: <code>{{ drift.reference }}</code></p>
{%- if drift.alerts %}
<div class="alert"><h3>{{ drift.alerts | length }} alert(s)</h3><ul>
{%- for a in drift.alerts %}
<li><b>{{ a.metric }}</b> = {{ a.value }} (threshold {{ a.threshold }}) {{ a.features | join(", ") }}</li>
{%- endfor %}
</ul></div>
{%- else %}
<p class="ok">No drift alert.</p>
{%- endif %}
{%- if drift.metrics %}
<p>NDCG@k = {{ drift.metrics.ndcg }}, Spearman = {{ drift.metrics.spearman }};
entered top k: {{ drift.metrics.entered | join(", ") or "none" }},
left: {{ drift.metrics.left | join(", ") or "none" }}</p>
{{ figure(drift.figure) }}
{{ table(drift.table) }}
{%- endif %}
{%- endif %}
{%- if over_time %}
{{ figure(over_time) }}
{%- endif %}
<h2>Waterfalls</h2>
{%- for f in waterfalls %}
{{ figure(f) }}
{%- endfor %}
<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var loaded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-images", images.length);
  document.body.setAttribute("data-images-loaded", loaded);
});
</script>
</body></html>
"""


@lru_cache(maxsize=1)
def _template() -> Any:
    """The compiled template (Jinja2 imported on first use; autoescaping on, and a missing
    context key is an error rather than an empty string)."""
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.from_string(REPORT_TEMPLATE)


def render_report(context: Mapping[str, Any]) -> str:
    """The report page for ``context`` (see the module docstring), every value escaped."""
    return _template().render(**context)

"""The HTML page of :mod:`ig_airflow.analysis.report`: one Jinja2 template rendered with
autoescaping, so every string taken from a run (feature, layer, category and column names, ids,
URIs, alert texts, quarantine reasons and values) reaches the page escaped. Only the template's
own markup is HTML: an inline style sheet, images as ``data:`` URIs (the page needs no other
file: a Content-Security-Policy serving it must allow ``img-src data:``), and the static
script at its end that records how many images loaded (``data-images`` and
``data-images-loaded`` on ``<body>``, read by the headless-browser tests).

Every section is a ``<section id="...">``: ``glance``, ``importance``, ``beeswarm``,
``categories`` (when the run has category summaries), ``cohort-N`` (one per configured cohort),
``layer-N`` (one per attributed layer),
``drift``, ``shift`` (when drift recorded a model/data decomposition or why not), ``over-time``,
``quality`` (when the quality stage ran), ``quarantine``,
``completeness`` and ``waterfalls``.

The context (built by ``build_report``): ``title``; ``run`` (``facts``: [label, text] pairs);
``glance`` (``label``, ``text``, ``state``: good/bad/neutral); ``importance`` (``figure``,
``table``, ``intervals``); ``beeswarm`` (``figure``, ``rows``, ``coloured``, ``categorical``); ``categories``
(``table``, ``top``, ``features``, ``min_share``) or None; ``cohorts`` (``column``, ``figure``,
``table``); ``layers`` (``name``, ``units``, ``silent``,
``figure``); ``drift`` (``state``: not_run/no_reference/alerts/clear, ``reference``, ``note``,
``alerts`` of ``metric``/``value``/``threshold``/``features`` (``name``, ``facts``)/``evidence``
([name, text] pairs), ``metrics`` of ``ndcg``/``spearman``/``entered``/``left`` or None, then
``figure`` and ``table``); ``shift`` (``reason`` why the change is not split, or ``summary``,
``sample``, ``figure``, ``table``) or None; ``over_time`` (``figure`` or None, ``runs``,
``intervals``, ``note``, ``table``, ``latest``); ``quality`` (``passed``, ``checks`` of
``name``/``passed``/``detail``, ``figures``, ``table``, ``numbers``) or None; ``quarantine``
(``ran``, ``quarantined``, ``input``, ``counts`` ([name, text] pairs), ``reasons``, ``mapped``,
``examples``: tables or None); ``completeness`` (``share``, ``all``, ``numbers``, ``worst``);
``waterfalls`` (``label``, ``prediction``, ``baseline``, ``figure``, ``table``). A figure is
``src`` (a data URI), ``caption`` and ``file`` (its PNG's name beside the page); a table is
``columns`` and ``rows`` of already formatted cells.

Runs with ``ig.loss`` add ``<section id="errors">`` after ``over-time``, from ``errors``
(``loss``, ``mean_loss``, ``mean_baseline``, ``rows``, ``converged``, ``figure``, ``table``,
``over_time``: a figure or None, ``note``), None otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

REPORT_TEMPLATE = """<!doctype html>
{%- macro figure(f) %}
<figure><img src="{{ f.src }}" alt="{{ f.caption }}" data-file="{{ f.file }}">
<figcaption>{{ f.caption }}</figcaption></figure>
{%- endmacro %}
{%- macro table(t) %}
<div class="wide"><table class="data">
<thead><tr>{% for c in t.columns %}<th>{{ c }}</th>{% endfor %}</tr></thead>
<tbody>
{%- for row in t.rows %}
<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>
{%- endfor %}
</tbody></table></div>
{%- endmacro %}
{%- macro pairs(items) %}
<table class="facts"><tbody>
{%- for name, text in items %}
<tr><th>{{ name }}</th><td>{{ text }}</td></tr>
{%- endfor %}
</tbody></table>
{%- endmacro %}
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font-family: sans-serif; max-width: 980px; margin: 2em auto; padding: 0 1em; color: #222; }
p { line-height: 1.4; }
nav { font-size: 13px; margin-bottom: 1em; } nav a { margin-right: 0.8em; }
section { margin: 2em 0; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
table.data, table.facts { border-collapse: collapse; font-size: 13px; margin: 1em 0; }
div.wide { overflow-x: auto; }
table.data td, table.data th { padding: 3px 8px; border-bottom: 1px solid #ddd; text-align: right; }
table.data td { white-space: nowrap; }
.evidence { font-size: 13px; color: #444; }
table.data td:first-child, table.data th:first-child { text-align: left; }
table.facts th { text-align: left; padding: 2px 12px 2px 0; font-weight: normal; color: #555; }
.alert { background: #fdecea; border-left: 4px solid #c44e52; padding: 0.5em 1em; margin: 0.5em 0; }
.ok { color: #2e7d32; }
.neutral { background: #f1f1f1; border-left: 4px solid #888; padding: 0.5em 1em; }
ul.glance { list-style: none; padding: 0; } ul.glance li { padding: 0.3em 0.8em; margin: 0.2em 0; }
ul.glance li.good { border-left: 4px solid #2e7d32; } ul.glance li.bad { border-left: 4px solid #c44e52; }
ul.glance li.neutral { border-left: 4px solid #888; background: none; }
.muted { color: #666; font-size: 13px; }
figure { margin: 1em 0; } img { max-width: 100%; }
</style></head>
<body><h1>{{ title }}</h1>
{{ pairs(run.facts) }}
<nav><a href="#glance">At a glance</a><a href="#importance">Importance</a><a href="#beeswarm">Beeswarm</a>
{%- if categories %}<a href="#categories">Categories</a>{% endif %}
{%- for cohort in cohorts %}<a href="#cohort-{{ loop.index0 }}">{{ cohort.column }}</a>{% endfor %}
<a href="#drift">Drift</a>
{%- if shift %}<a href="#shift">Model vs data</a>{% endif %}
<a href="#over-time">Over time</a>{% if errors %}<a href="#errors">Errors</a>{% endif %}
{%- if quality %}<a href="#quality">Quality</a>{% endif %}
<a href="#quarantine">Quarantine</a><a href="#completeness">Completeness</a>
<a href="#waterfalls">Waterfalls</a></nav>

<section id="glance"><h2>At a glance</h2><ul class="glance">
{%- for line in glance %}
<li class="{{ line.state }}"><b>{{ line.label }}</b>: {{ line.text }}</li>
{%- endfor %}
</ul></section>

<section id="importance"><h2>Global importance</h2>
<p>Mean |attribution| per feature over the explained rows: how much each feature moved the explained
score away from the baseline, on average. The marker is the signed mean.
{%- if importance.intervals %} The whiskers are 95% intervals of the mean |attribution| (the drift stage's
bootstrap over the run's rows).{% endif %}</p>
{{ figure(importance.figure) }}
{{ table(importance.table) }}
</section>

<section id="beeswarm"><h2>Beeswarm</h2>
<p>Each dot is one of {{ beeswarm.rows }} sampled rows, placed at its attribution for the feature.
{%- if beeswarm.coloured %} Colour is the row's value of the feature: for numbers its percentile among
the sampled rows (blue low, red high); for categories
{%- if beeswarm.categorical %} ({{ beeswarm.categorical | join(", ") }}){% endif %} where the category's
mean attribution ranks among the feature's categories (blue lowest, red highest; the labels are in the
categories table).
{%- else %} The rows' values could not be read from the run's input, so the dots are grey.{% endif %}</p>
{{ figure(beeswarm.figure) }}
</section>
{%- if categories %}

<section id="categories"><h2>Categories</h2>
<p>For each of the {{ categories.features }} categorical features, the {{ categories.top }} categories with
the largest mean |attribution| among those with at least {{ categories.min_share }} of the rows, by label.</p>
{{ table(categories.table) }}
</section>
{%- endif %}
{%- for cohort in cohorts %}

<section id="cohort-{{ loop.index0 }}"><h2>Cohort: <code>{{ cohort.column }}</code></h2>
<p>Each segment's importance on its own (<code>cohorts</code> in the run config): the share of the segment's
total mean |attribution| per feature, and, against the drift reference, the segment's NDCG@k and the
features that entered its top k (segments with too few rows in either run are not tested).</p>
{{ figure(cohort.figure) }}
{{ table(cohort.table) }}
</section>
{%- endfor %}
{%- for layer in layers %}

<section id="layer-{{ loop.index0 }}"><h2>Layer <code>{{ layer.name }}</code></h2>
<p>{{ layer.units }} units; {{ layer.silent }} with no attribution on any explained row.</p>
{{ figure(layer.figure) }}
</section>
{%- endfor %}

<section id="drift"><h2>Drift</h2>
{%- if drift.state == "not_run" %}
<p class="neutral">Drift was not computed for this run.</p>
{%- elif drift.state == "no_reference" %}
<p class="neutral"><b>No reference yet</b>: there is no earlier run or configured reference to compare
this run with, so drift was not assessed. The next run is compared with this one.
{%- if drift.note %} <span class="muted">({{ drift.note }})</span>{% endif %}</p>
{%- else %}
<p>Reference: <code>{{ drift.reference }}</code></p>
{%- endif %}
{%- if drift.alerts %}
<div class="alert"><h3>{{ drift.alerts | length }} alert(s)</h3><ul>
{%- for a in drift.alerts %}
<li><b>{{ a.metric }}</b> = {{ a.value }} (threshold {{ a.threshold }})
{%- if a.features %}<ul>
{%- for f in a.features %}
<li><code>{{ f.name }}</code>{% if f.facts %}: {{ f.facts }}{% endif %}</li>
{%- endfor %}
</ul>{% endif %}
{%- if a.evidence %}<div class="evidence">evidence: {% for name, text in a.evidence %}{{ name }} {{ text }}
{%- if not loop.last %}; {% endif %}{% endfor %}</div>{% endif %}</li>
{%- endfor %}
</ul></div>
{%- elif drift.state == "clear" %}
<p class="ok">No drift alert against the reference.</p>
{%- endif %}
{%- if drift.metrics %}
<p>NDCG@k = {{ drift.metrics.ndcg }}, Spearman = {{ drift.metrics.spearman }};
entered top k: {{ drift.metrics.entered | join(", ") or "none" }},
left: {{ drift.metrics.left | join(", ") or "none" }}</p>
{{ figure(drift.figure) }}
{{ table(drift.table) }}
{%- endif %}
</section>
{%- if shift %}

<section id="shift"><h2>Where the change comes from</h2>
{%- if shift.reason %}
<p class="neutral">The change is not split into model and data parts: {{ shift.reason }}.</p>
{%- else %}
<p><b>{{ shift.summary }}</b></p>
<p>Each feature's change in mean |attribution| against the reference, split into the part due to the
model (both versions on the same rows) and the part due to the data (one version on both runs' rows):
a symmetric (Shapley) split from {{ shift.sample }} rows explained again by the other run's model.
The two parts add up to the change (the marker); the intervals are the sample's 95% bootstrap intervals.</p>
{{ figure(shift.figure) }}
{{ table(shift.table) }}
{%- endif %}
</section>
{%- endif %}

<section id="over-time"><h2>Importance over time</h2>
{%- if over_time.figure %}
<p>Mean |attribution| of the most important features in each of the {{ over_time.runs }} runs of the
history table{% if over_time.intervals %}, with their 95% intervals as bands{% endif %}.</p>
{{ figure(over_time.figure) }}
{%- endif %}
{%- if over_time.note %}
<p class="muted">{{ over_time.note }}</p>
{%- endif %}
{%- if over_time.table %}
<p>Intervals of the latest run ({{ over_time.latest }}):</p>
{{ table(over_time.table) }}
{%- endif %}
</section>
{%- if errors %}

<section id="errors"><h2>What drives errors</h2>
<p>Each labelled row's loss ({{ errors.loss }}) explained like its prediction: a feature's loss attribution
is how much its value raised (&gt; 0) or lowered (&lt; 0) the row's loss against its label, from the
baseline's loss on the same label. Mean loss {{ errors.mean_loss }} on the {{ errors.rows }} labelled rows
explained (the baseline's: {{ errors.mean_baseline }}); {{ errors.converged }} of them converged.</p>
{{ figure(errors.figure) }}
{{ table(errors.table) }}
{%- if errors.over_time %}
<p>Mean loss attribution of the features that raised the loss most, in each run of the history table:</p>
{{ figure(errors.over_time) }}
{%- elif errors.note %}
<p class="muted">{{ errors.note }}</p>
{%- endif %}
</section>
{%- endif %}
{%- if quality %}

<section id="quality"><h2>Quality of the explanations</h2>
{%- if quality.passed %}<p class="ok">Every quality check passed.</p>{% endif %}
<ul>
{%- for c in quality.checks %}
<li{% if not c.passed %} class="alert"{% endif %}><b>{{ c.name }}</b>:
{{ "passed" if c.passed else "FAILED" }}; {{ c.detail }}</li>
{%- endfor %}
</ul>
{{ table(quality.table) }}
{%- for f in quality.figures %}
{{ figure(f) }}
{%- endfor %}
{{ table(quality.numbers) }}
</section>
{%- endif %}

<section id="quarantine"><h2>Quarantine</h2>
{%- if not quarantine.ran %}
<p class="neutral">Validation did not run for this run (or its report is not where the run says): no
rows were quarantined or checked.</p>
{%- else %}
<p>{{ quarantine.quarantined }} of {{ quarantine.input }} input rows were quarantined by validation
and not explained.</p>
{{ pairs(quarantine.counts) }}
{%- if quarantine.reasons %}
<h3>Rows by reason</h3>
{{ table(quarantine.reasons) }}
{%- endif %}
{%- if quarantine.mapped %}
<h3>Values mapped to defaults (rows explained)</h3>
{{ table(quarantine.mapped) }}
{%- endif %}
{%- if quarantine.examples %}
<h3>Examples</h3>
{{ table(quarantine.examples) }}
{%- endif %}
{%- endif %}
</section>

<section id="completeness"><h2>Completeness</h2>
<p>{{ completeness.share }} of the explained rows converged: their attributions add up to the change
in the explained score within the run's tolerance.</p>
{{ pairs(completeness.numbers) }}
<h3>Rows with the largest completeness error</h3>
{{ table(completeness.worst) }}
</section>

<section id="waterfalls"><h2>Waterfalls</h2>
<p>From the baseline prediction to the row's prediction, one step per feature (largest first), each
labelled with the row's value.</p>
{%- for w in waterfalls %}
<h3>{{ w.label }}</h3>
<p>prediction {{ w.prediction }}, baseline {{ w.baseline }}</p>
{{ figure(w.figure) }}
{{ table(w.table) }}
{%- endfor %}
</section>
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

"""Jinja2 templates of the ig_airflow views; autoescaped, links relative to the page (they work
behind any prefix or proxy the Airflow UI sits under)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import jinja2

BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{% block title %}{% endblock %} · ig_airflow</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.2em 1.6em; color: #1a202c; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.4em; }
table { border-collapse: collapse; margin: .6em 0; } td, th { padding: .25em .7em; text-align: left; }
tr:nth-child(even) td { background: #f5f7fa; } th { border-bottom: 1px solid #cbd5e0; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.card { border: 1px solid #cbd5e0; border-radius: 6px; padding: .6em 1.2em; margin: 1em 0; }
.bar { display: inline-block; height: .8em; background: #3182ce; vertical-align: middle; }
.neg { background: #e53e3e; } .alert { color: #c53030; font-weight: 600; } .ok { color: #2f855a; }
.muted { color: #718096; font-size: .9em; } code { font-size: .9em; }
nav a { margin-right: 1em; }
</style></head><body>
{% block body %}{% endblock %}
</body></html>
"""

DAG = """{% extends "base.html" %}{% block title %}{{ dag_id }}{% endblock %}{% block body %}
<h1>Explanation runs of <code>{{ dag_id }}</code></h1>
{% if not lines %}<p>No DAG run of this DAG has written explanations yet.</p>{% else %}
<table id="runs"><tr><th>DAG run</th><th>model version</th><th>partition</th>
<th class="num">rows explained</th>
<th class="num">quarantined</th><th class="num">converged</th><th>drift</th></tr>
{% for line in lines %}{% set f = line.facts %}<tr>
<td><a href="runs/{{ line.dag_run_id | segment }}/">{{ line.dag_run_id }}</a></td>
<td>{{ f.run.model_version or "-" }}</td><td>{{ f.run.partition or "-" }}</td>
<td class="num">{{ f.rows_explained if f.rows_explained is not none else "-" }}</td>
<td class="num">{{ f.rows_quarantined if f.rows_quarantined is not none else "-" }}</td>
<td class="num">{{ "%.2f%%" | format(100 * f.converged_share) if f.converged_share is not none
  else "-" }}</td>
<td>{% if f.drift and f.drift.reference %}{% if f.drift.alerts %}<span class="alert">
{{ f.drift.alerts | length }} alert(s)</span>{% else %}<span class="ok">no alert</span>{% endif %}
{% elif f.drift %}no reference yet{% else %}-{% endif %}</td></tr>{% endfor %}
</table>{% endif %}
{% endblock %}"""

RUN = """{% extends "base.html" %}{% block title %}{{ dag_run_id }}{% endblock %}{% block body %}
<h1>Explanations of <code>{{ dag_id }}</code> run <code>{{ dag_run_id }}</code></h1>
{% if not cards %}<p>This DAG run has written no explanations (yet).</p>{% endif %}
{% for c in cards %}<div class="card" id="run-{{ loop.index0 }}">
<h2>{{ c.run.model_version and "Model " ~ c.run.model_version or "Run" }}
{% if c.run.partition %}· {{ c.run.partition }}{% endif %}</h2>
<p class="muted">{{ c.uri }}</p>
<nav>{% if c.has_report %}<a href="{{ loop.index0 }}/report/">Report</a>{% endif %}
{% if c.history_uri %}<a href="{{ loop.index0 }}/history">Drift history</a>{% endif %}</nav>
{% if not c.finished %}<p>Not explained yet: the IG stage has not committed this run.</p>{% else %}
<p>{{ c.rows_explained }} rows explained{% if c.rows_quarantined is not none %},
{{ c.rows_quarantined }} quarantined{% endif %}{% if c.converged_share is not none %};
completeness converged on {{ "%.2f%%" | format(100 * c.converged_share) }} of rows
(mean error {{ "%.3g" | format(c.mean_completeness_error or 0) }}){% endif %}.</p>
{% if c.drift and c.drift.reference %}<p>Drift against <code>{{ c.drift.reference }}</code>:
{% if c.drift.alerts %}<span class="alert">{{ c.drift.alerts | length }} alert(s)</span>
{% else %}<span class="ok">no alert</span>{% endif %}</p>
{% elif c.drift %}<p class="muted">Drift: no reference yet (the first run of its kind), nothing to
compare with.</p>{% endif %}
{% if c.drift.alerts %}<ul class="alerts">{% for a in c.drift.alerts %}<li>{{ a.metric }}
{{ a.features | join(", ") }}{% if a.value is number %}: {{ "%.3g" | format(a.value) }} (threshold
{{ a.threshold }}){% endif %}</li>
{% endfor %}</ul>{% endif %}
{% if c.quality %}<p>Quality of the explanations:
{% if c.quality.passed %}<span class="ok">every check passed</span>{% else %}<span class="alert">
{{ c.quality.checks | rejectattr("passed") | map(attribute="name") | join(", ") }} failed</span>{% endif %}
(deletion AUC {{ "%.3f" | format(c.quality.deletion.auc.ig) }} against random
{{ "%.3f" | format(c.quality.deletion.auc.random) }}).</p>{% endif %}
<h3>Top features</h3><table class="top-features"><tr><th>feature</th><th class="num">mean |attribution|</th>
<th></th><th class="num">mean attribution</th></tr>
{% for t in c.importance %}<tr><td>{{ t.feature }}</td><td class="num">{{ "%.4f" | format(t.mean_abs) }}</td>
<td><span class="bar" style="width: {{ t.width }}px"></span></td>
<td class="num">{{ "%+.4f" | format(t.mean) }}</td></tr>{% endfor %}</table>
<form method="get" action="{{ loop.index0 }}/why" class="why-search"><label>Why this prediction? Row id
<input name="id" placeholder="12345 or column=value, column=value"></label>
<button type="submit">Explain</button></form>{% endif %}
</div>{% endfor %}
{% endblock %}"""

WHY = """{% extends "base.html" %}{% block title %}why {{ row_id }}{% endblock %}{% block body %}
<nav><a href="../">← the run's explanations</a></nav>
<h1>Why? <code>{{ dag_id }}</code> run <code>{{ dag_run_id }}</code></h1>
<form method="get" action="why" class="why-search"><label>Row id
<input name="id" value="{{ row_id }}" placeholder="12345 or column=value, column=value"></label>
<button type="submit">Explain</button></form>
{% if error %}<p class="alert" id="why-error">{{ error }}</p>{% endif %}
{% set e = explanation %}{% if e %}<div class="card" id="why">
<h2>{% for k, v in e.ids.items() %}{{ k }} = {{ v }}{% if not loop.last %}, {% endif %}{% endfor %}</h2>
{% if e.status == "quarantined" %}<p class="alert">Not explained: quarantined by validation:
{{ e.quarantine_reason }}</p>
<table>{% for k, v in e.quarantined_values.items() %}
<tr><td>{{ k }}</td><td>{{ v }}</td></tr>{% endfor %}</table>
{% else %}<p>Prediction <b>{{ "%.4f" | format(e.prediction) }}</b> against the baseline's
{{ "%.4f" | format(e.baseline_prediction) }} (change
{{ "%+.4f" | format(e.prediction - e.baseline_prediction) }})
{%- if e.target is defined %} for target {{ e.target }}{% endif %}; completeness error
{{ "%.2f%%" | format(100 * e.completeness_error) }} after {{ e.n_steps }} steps,
{% if e.converged %}<span class="ok">converged</span>
{%- else %}<span class="alert">not converged</span>{% endif %}.</p>
<table class="contributions"><tr><th>feature</th><th>value</th><th>baseline</th>
<th class="num">attribution</th><th></th><th class="num">share</th></tr>
{% for c in e.contributions %}<tr><td>{{ c.feature }}</td><td>{{ c.value }}</td><td>{{ c.baseline }}</td>
<td class="num">{{ "%+.4f" | format(c.attribution) }}</td>
<td><span class="bar{% if c.attribution < 0 %} neg{% endif %}" style="width: {{ c.width }}px"></span></td>
<td class="num">{{ "%.1f%%" | format(100 * c.share) }}</td></tr>{% endfor %}</table>{% endif %}
</div>{% endif %}
{% endblock %}"""

HISTORY = """{% extends "base.html" %}{% block title %}history{% endblock %}{% block body %}
<nav><a href="../">← the run's explanations</a></nav>
<h1>Drift history · <code>{{ dag_id }}</code></h1>
{% if not runs %}<p>No run has been recorded in the history table yet.</p>{% else %}
<p class="muted">Mean |attribution| of the {{ features | length }} features that rank
highest over the history,
one line per recorded run (partition key, model version, run id).</p>
<table id="history"><tr><th>partition key</th><th>model version</th><th>run id</th><th>recorded</th>
{% for f in features %}<th class="num">{{ f }}</th>{% endfor %}</tr>
{% for r in runs %}<tr><td>{{ r.run_key }}</td><td>{{ r.model_version }}</td><td>{{ r.run_id }}</td>
<td>{{ r.recorded_at }}</td>{% for v in r["values"] %}
<td class="num">{{ "%.4f" | format(v) if v is not none else "-" }}</td>{% endfor %}</tr>{% endfor %}
</table>{% endif %}
{% endblock %}"""

_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.DictLoader(
        {"base.html": BASE, "dag.html": DAG, "run.html": RUN, "why.html": WHY, "history.html": HISTORY}
    ),
    autoescape=True,
    undefined=jinja2.ChainableUndefined,
)
_ENVIRONMENT.filters["segment"] = lambda value: quote(str(value), safe="")


def render(name: str, **context: Any) -> str:
    """The page ``name`` with ``context``; every value HTML-escaped."""
    return _ENVIRONMENT.get_template(name).render(**context)

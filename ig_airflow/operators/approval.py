"""A human gate on promoting a candidate model, driven by its attribution drift."""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.hitl import HITLBranchOperator
from airflow.sdk import Param
from airflow.sdk.definitions.param import ParamsDict

from ig_airflow.operators.links import run_page_url

AUTOMATIC = "automatic"  # who approved a candidate whose drift raised no alert


class ModelApprovalOperator(HITLBranchOperator):
    """Branch to ``promote_task_id`` or ``keep_task_id`` after the drift task ``drift_task_id``
    (a :class:`~ig_airflow.operators.SummariseDriftOperator`).

    No drift alert: approved automatically, no one is asked. An alert: the task waits in
    ``awaiting_input`` (the Airflow UI's Required actions) with the alerts, NDCG@k and a link to
    the run's report, until someone chooses "Approve" or "Reject" (with an optional reason).
    Either way the decision (``option``, ``automatic``, ``by``, ``reason``, ``at``, ``alerts``,
    ``ndcg_at_k``, ``report``) is pushed as the XCom ``decision`` for the downstream task that
    records it (:mod:`ig_airflow.promotion`).

    Example::

        gate = ModelApprovalOperator(task_id="approve_candidate", drift_task_id="drift",
                                     promote_task_id="promote_candidate", keep_task_id="keep_current")
    """

    APPROVE, REJECT = "Approve", "Reject"
    ui_color = "#fdf1d8"

    def __init__(
        self,
        *,
        drift_task_id: str,
        promote_task_id: str,
        keep_task_id: str,
        subject: str = "Promote the candidate model?",
        **kwargs: Any,
    ) -> None:
        params = kwargs.pop("params", None)  # the DAG's, merged in by Airflow: the form shows the task's
        params = params if isinstance(params, ParamsDict) else ParamsDict(params or {})
        params["reason"] = Param(
            "", type="string", title="Reason", description="Why (recorded with the decision).", source="task"
        )
        super().__init__(
            subject=subject,
            options=[self.APPROVE, self.REJECT],
            options_mapping={self.APPROVE: promote_task_id, self.REJECT: keep_task_id},
            params=params,
            multiple=False,
            **kwargs,
        )
        self.drift_task_id = drift_task_id

    def execute(self, context: Any) -> Any:
        from airflow.sdk.exceptions import AirflowFailException
        from airflow.sdk.timezone import utcnow

        drift = context["ti"].xcom_pull(task_ids=self.drift_task_id)
        if not isinstance(drift, dict) or "alert" not in drift:
            raise AirflowFailException(f"task {self.drift_task_id!r} returned no drift result: {drift!r}")
        if not drift["alert"]:
            self.log.info("no drift alert: the candidate is approved automatically")
            decision = {
                "option": self.APPROVE,
                "automatic": True,
                "by": AUTOMATIC,
                "reason": "no drift alert",
            }
            self.push_decision(context, drift, {**decision, "at": utcnow().isoformat()})
            return self.do_branch(context, self.options_mapping[self.APPROVE])
        report = run_page_url(context["dag"].dag_id, context["run_id"], "report/")
        self.subject = f"{self.subject} The candidate raised {len(drift['alerts'])} drift alert(s)"
        self.body = approval_body(drift, report)
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        if "error" not in event:
            self.validate_chosen_options(event["chosen_options"])
            user = event.get("responded_by_user") or {}
            by = user.get("name") or user.get("id") or "timeout (default option)"
            reason = str((event.get("params_input") or {}).get("reason") or "").strip()
            when = event["responded_at"]
            decision = {
                "option": event["chosen_options"][0],
                "automatic": False,
                "by": by,
                "reason": reason,
                "at": when.isoformat() if hasattr(when, "isoformat") else str(when),
            }
            self.push_decision(context, context["ti"].xcom_pull(task_ids=self.drift_task_id) or {}, decision)
        return super().execute_complete(context=context, event=event)

    def push_decision(self, context: Any, drift: dict[str, Any], decision: dict[str, Any]) -> None:
        """Push ``decision`` with what it saw (alerts, NDCG@k, report) as the XCom ``decision``."""
        seen = {"alerts": list(drift.get("alerts") or []), "ndcg_at_k": drift.get("ndcg_at_k")}
        decision = {**decision, **seen, "report": drift.get("report")}
        self.log.info("decision: %s", decision)
        context["ti"].xcom_push(key="decision", value=decision)


def approval_body(drift: dict[str, Any], report_url: str) -> str:
    """The Markdown a reviewer reads: the alerts, NDCG@k and where the report is."""
    ndcg = drift.get("ndcg_at_k")
    lines = [
        f"The candidate model's explanations differ from production's on run `{drift.get('run_key')}`: "
        f"**{len(drift['alerts'])} drift alert(s)**, NDCG@k = "
        f"{'n/a' if ndcg is None else f'{ndcg:.3f}'} (1 = the same top features in the same order).",
        "",
        *(f"- `{alert}`" for alert in drift["alerts"]),
        "",
        f"Report: [{report_url}]({report_url}) (file: `{drift.get('report')}`)",
        "",
        "**Approve** makes the candidate the current model; **Reject** keeps production. "
        "Give a reason: it is recorded with the decision.",
    ]
    return "\n".join(lines)

"""A stdout callback that prints the play's results as one JSON document at the end, as
ansible.posix's ``json`` callback does (ansible-core does not ship that one, and the
collection is not on the package index): {"tasks": [{"task", "hosts": {host: result}}],
"stats": {host: counts}}."""

from __future__ import annotations

import json

from ansible.module_utils.common.json import AnsibleJSONEncoder
from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "json_results"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tasks = []

    def v2_playbook_on_task_start(self, task, is_conditional):
        self.tasks.append({"task": {"name": task.get_name()}, "hosts": {}})

    def v2_playbook_on_handler_task_start(self, task):
        self.tasks.append({"task": {"name": task.get_name(), "handler": True}, "hosts": {}})

    def _record(self, result, **flags):
        self.tasks[-1]["hosts"][result._host.get_name()] = dict(result._result, **flags)

    def v2_runner_on_ok(self, result, **kwargs):
        self._record(result)

    def v2_runner_on_failed(self, result, ignore_errors=False, **kwargs):
        self._record(result, failed=True)

    def v2_runner_on_skipped(self, result, **kwargs):
        self._record(result, skipped=True)

    def v2_runner_on_unreachable(self, result, **kwargs):
        self._record(result, unreachable=True)

    def v2_playbook_on_stats(self, stats):
        summary = {host: stats.summarize(host) for host in sorted(stats.processed)}
        document = {"tasks": self.tasks, "stats": summary}
        self._display.display(json.dumps(document, cls=AnsibleJSONEncoder, indent=2))

"""The management facade's policies (a mixin of ``admin.Admin``): list, set and clear
policies and operator policies, as RabbitMQ's /api/policies and /api/operator-policies
(and rabbitmqctl set_policy / set_operator_policy): policymaker users on the vhosts they
may reach, administrators everywhere; operator policies for administrators only."""
from __future__ import annotations

from . import access


class PolicyAdmin:
    def _may_change_policies(self, vhost: str, operator: bool) -> None:
        if self.user is None:
            return
        if operator:
            access.administrator(self.user, self.tags)
        else:
            access.policymaker(self.user, self.tags)
        self._vhost(vhost)  # (404 for a vhost it cannot see)

    def policies(self, vhost: str | None = None, operator: bool = False) -> list[dict]:
        if self.user is not None:
            access.policymaker(self.user, self.tags)
        return [d for vh in self._vhosts(vhost) for d in vh.policies.export(operator)]

    def set_policy(self, vhost: str, name: str, pattern: str, definition: dict,
                   priority: int = 0, apply_to: str = "all", operator: bool = False) -> dict:
        """Raises policies.PolicyError (RabbitMQ's validation text) for a bad one."""
        self._may_change_policies(vhost, operator)
        return self.broker.set_policy(vhost, name, pattern, definition, priority, apply_to,
                                      operator).as_json()

    def clear_policy(self, vhost: str, name: str, operator: bool = False) -> None:
        self._may_change_policies(vhost, operator)
        self.broker.clear_policy(vhost, name, operator)

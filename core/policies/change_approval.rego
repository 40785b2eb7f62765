# The engine's default change-approval policy (CH-4: approval by the right authority, which
# depends on type, size and risk; CH-8: emergency changes go to the emergency authority).
#
# Input (built by the engine; see core/src/policy.rs for the exact shape):
#   input.now, input.now_ns      the decision's clock reading (the policy may not read a clock)
#   input.change                 {id, number, type, title, requester, implementer, template,
#                                 window: {start, end, time_zone} | null,
#                                 scope: {cis: [{id, class, name}], planned: [{class, name}]}}
#   input.requester_roles        the requester's roles when the decision was made
#   input.assessment             {score, level, position, downstream_cis, truncated,
#                                 services: [{id, name, tier, window_in_service_hours, owners}],
#                                 recent_failures, factors: [{name, points, why}]} or null
#   input.calendar               calendar facts, or null until the change calendar exists
#
# Output: data.cmdb.change.decision =
#   {"auto_approve": bool, "deny": [reason], "approvals": [requirement]}
# where a requirement is {"role": ROLE, "count": N, "reason": TEXT} (N distinct principals
# holding ROLE when they approve) or {"principals": [NAME], "count": N, "reason": TEXT}.
package cmdb.change

import rego.v1

level := input.assessment.level

high_risk if level in {"high", "critical"}

tier1_services contains service if {
	some service in input.assessment.services
	service.tier == 1
}

tier1_in_hours contains service if {
	some service in tier1_services
	service.window_in_service_hours
}

# Standard changes are pre-approved by their template unless the assessment finds them risky
# or they land in a tier-1 service's hours.
default auto_approve := false

auto_approve if {
	input.change.type == "standard"
	input.assessment != null
	not high_risk
	count(tier1_in_hours) == 0
}

deny contains reason if {
	input.change.type != "emergency"
	level == "critical"
	input.change.window == null
	reason := "a critical-risk change must request a window before it can be approved"
}

needs_cab if {
	input.change.type != "emergency"
	not auto_approve
}

approvals contains {"role": "approver", "count": 1, "reason": "a change needs an approver (CH-4)"} if {
	needs_cab
	not high_risk
}

approvals contains requirement if {
	needs_cab
	high_risk
	requirement := {"role": "approver", "count": 2, "reason": sprintf("%s risk needs two approvers", [level])}
}

# Critical risk: a change manager signs off as well (for a service open around the clock
# there is no window outside its hours, so the policy asks for more authority, not a window).
approvals contains requirement if {
	needs_cab
	level == "critical"
	some service in tier1_in_hours
	requirement := {
		"role": "change-manager",
		"count": 1,
		"reason": sprintf("critical risk inside the service hours of tier-1 service %s needs a change manager", [service.name]),
	}
}

approvals contains requirement if {
	needs_cab
	some service in tier1_services
	count(service.owners) > 0
	requirement := {
		"principals": service.owners,
		"count": 1,
		"reason": sprintf("tier-1 service %s needs one of its owners to approve", [service.name]),
	}
}

approvals contains requirement if {
	needs_cab
	some service in tier1_services
	count(service.owners) == 0
	requirement := {
		"role": "change-manager",
		"count": 1,
		"reason": sprintf("tier-1 service %s has no owner principal; a change manager approves for it", [service.name]),
	}
}

approvals contains {"role": "emergency-approver", "count": 1, "reason": "an emergency change needs the emergency authority (CH-8)"} if {
	input.change.type == "emergency"
}

decision := {
	"auto_approve": auto_approve,
	"deny": [reason | some reason in deny],
	"approvals": [requirement | some requirement in approvals],
}

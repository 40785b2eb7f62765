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
#   input.calendar               {conflicts: [{change, reason, acknowledged, acknowledged_by_other}],
#                                 freezes: [{name, start, end}]} for the requested window, or null
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

# A list of service names for a reason: the first three, and how many in all.
names_text(names) := names[0] if count(names) == 1

names_text(names) := sprintf("%s and %d more", [concat(", ", array.slice(names, 0, 3)), count(names) - 3]) if count(names) > 3

names_text(names) := concat(", ", names) if {
	count(names) > 1
	count(names) <= 3
}

# Critical risk: a change manager signs off as well (for a service open around the clock
# there is no window outside its hours, so the policy asks for more authority, not a window).
approvals contains requirement if {
	needs_cab
	level == "critical"
	count(tier1_in_hours) > 0
	names := sort([s.name | some s in tier1_in_hours])
	requirement := {
		"role": "change-manager",
		"count": 1,
		"reason": sprintf("critical risk inside the service hours of tier-1 services (%s) needs a change manager", [names_text(names)]),
	}
}

# Open conflicts with scheduled changes, or a window inside a freeze: a change manager, who
# owns the calendar, approves as well (CH-5).
open_conflicts := [c | some c in input.calendar.conflicts; not c.acknowledged; not c.acknowledged_by_other]

approvals contains requirement if {
	needs_cab
	count(open_conflicts) > 0
	requirement := {
		"role": "change-manager",
		"count": 1,
		"reason": sprintf("the window conflicts with %d scheduled changes (%s)", [count(open_conflicts), concat(", ", [c.change | some c in open_conflicts])]),
	}
}

approvals contains requirement if {
	needs_cab
	count(input.calendar.freezes) > 0
	requirement := {
		"role": "change-manager",
		"count": 1,
		"reason": sprintf("the window falls into freeze windows (%s)", [concat(", ", [f.name | some f in input.calendar.freezes])]),
	}
}

# A bounded impact walk may have missed services: a change manager judges the rest.
approvals contains requirement if {
	needs_cab
	input.assessment.truncated
	requirement := {
		"role": "change-manager",
		"count": 1,
		"reason": sprintf("the impact walk stopped at %d CIs, so services beyond it are not listed; a change manager judges the rest", [input.assessment.downstream_cis]),
	}
}

# One of the owners of each tier-1 service reached; services with the same owners share one
# requirement (one approval covers a team's services).
tier1_owner_sets contains service.owners if {
	some service in tier1_services
	count(service.owners) > 0
}

approvals contains requirement if {
	needs_cab
	some owners in tier1_owner_sets
	names := sort([s.name | some s in tier1_services; s.owners == owners])
	requirement := {
		"principals": owners,
		"count": 1,
		"reason": sprintf("tier-1 services (%s) need one of their owners to approve", [names_text(names)]),
	}
}

approvals contains requirement if {
	needs_cab
	orphans := sort([s.name | some s in tier1_services; count(s.owners) == 0])
	count(orphans) > 0
	requirement := {
		"role": "change-manager",
		"count": 1,
		"reason": sprintf("tier-1 services (%s) have no owner principal; a change manager approves for them", [names_text(orphans)]),
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

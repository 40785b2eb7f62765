# Tests of the default policy; the engine's test suite runs every test_ rule
# (core/src/policy.rs, `default_policy_rego_tests_pass`).
package cmdb.change_test

import rego.v1

import data.cmdb.change

svc(tier, in_hours, owners) := {"id": "s", "name": "payments", "tier": tier, "window_in_service_hours": in_hours, "owners": owners}

req(type, level, services) := {
	"now": "2030-01-01T00:00:00Z",
	"now_ns": 1893456000000000000,
	"change": {"type": type, "window": {"start": "2030-01-02T00:00:00Z", "end": "2030-01-02T02:00:00Z", "time_zone": "UTC"}},
	"requester_roles": ["editor"],
	"assessment": {"level": level, "score": 10, "services": services},
	"calendar": null,
}

test_standard_low_risk_is_auto_approved if {
	d := change.decision with input as req("standard", "low", [])
	d.auto_approve
	count(d.approvals) == 0
	count(d.deny) == 0
}

test_standard_high_risk_needs_two_approvers if {
	d := change.decision with input as req("standard", "high", [])
	not d.auto_approve
	{"role": "approver", "count": 2, "reason": "high risk needs two approvers"} in d.approvals
}

test_standard_in_tier1_hours_is_not_auto_approved if {
	d := change.decision with input as req("standard", "low", [svc(1, true, ["olivia"])])
	not d.auto_approve
}

test_normal_low_risk_needs_one_approver if {
	d := change.decision with input as req("normal", "low", [])
	d.approvals == [{"role": "approver", "count": 1, "reason": "a change needs an approver (CH-4)"}]
}

test_tier1_needs_its_owner if {
	d := change.decision with input as req("normal", "medium", [svc(1, false, ["olivia", "omar"])])
	some a in d.approvals
	a.principals == ["olivia", "omar"]
	a.count == 1
}

test_tier1_without_owner_needs_a_change_manager if {
	d := change.decision with input as req("normal", "medium", [svc(1, false, [])])
	some a in d.approvals
	a.role == "change-manager"
}

test_critical_in_tier1_hours_needs_a_change_manager_too if {
	d := change.decision with input as req("normal", "critical", [svc(1, true, ["olivia"])])
	count(d.deny) == 0
	some a in d.approvals
	a.role == "change-manager"
	contains(a.reason, "critical risk")
}

test_critical_without_a_window_is_denied if {
	r := req("normal", "critical", [])
	d := change.decision with input as object.union(r, {"change": {"type": "normal", "window": null}})
	d.deny == ["a critical-risk change must request a window before it can be approved"]
}

test_emergency_goes_to_the_emergency_authority if {
	d := change.decision with input as req("emergency", "high", [])
	d.approvals == [{"role": "emergency-approver", "count": 1, "reason": "an emergency change needs the emergency authority (CH-8)"}]
}

test_services_with_the_same_owners_share_one_requirement if {
	services := [
		{"id": "a", "name": "alpha", "tier": 1, "window_in_service_hours": false, "owners": ["olivia"]},
		{"id": "b", "name": "beta", "tier": 1, "window_in_service_hours": false, "owners": ["olivia"]},
		{"id": "c", "name": "gamma", "tier": 1, "window_in_service_hours": false, "owners": ["omar"]},
		{"id": "d", "name": "delta", "tier": 1, "window_in_service_hours": false, "owners": ["olivia"]},
		{"id": "e", "name": "epsilon", "tier": 1, "window_in_service_hours": false, "owners": ["olivia"]},
	]
	d := change.decision with input as req("normal", "medium", services)
	owned := [a | some a in d.approvals; a.principals]
	count(owned) == 2
	some a in owned
	a.principals == ["olivia"]
	a.reason == "tier-1 services (alpha, beta, delta and 1 more) need one of their owners to approve"
}

test_a_truncated_impact_walk_needs_a_change_manager if {
	r := req("normal", "medium", [])
	d := change.decision with input as object.union(r, {"assessment": {"truncated": true, "downstream_cis": 10000}})
	some a in d.approvals
	a.role == "change-manager"
	contains(a.reason, "stopped at 10000 CIs")
}

test_open_conflicts_and_freezes_need_a_change_manager if {
	r := req("normal", "low", [])
	cal := {"conflicts": [
		{"change": "CHG-000007", "reason": "both change db-01", "acknowledged": false, "acknowledged_by_other": false},
		{"change": "CHG-000008", "reason": "both change db-01", "acknowledged": true, "acknowledged_by_other": false},
	], "freezes": [{"name": "quarter end", "start": "2030-01-01T00:00:00Z", "end": "2030-01-02T00:00:00Z"}]}
	d := change.decision with input as object.union(r, {"calendar": cal})
	reasons := {a.reason | some a in d.approvals; a.role == "change-manager"}
	reasons == {"the window conflicts with 1 scheduled changes (CHG-000007)", "the window falls into freeze windows (quarter end)"}
}

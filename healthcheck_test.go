package main

import (
	"strings"
	"testing"
)

// TestHealthcheckCommand: `errand healthcheck` succeeds against a healthy
// errand and fails against one that does not answer.
func TestHealthcheckCommand(t *testing.T) {
	base := startErrand(t, map[string]string{})
	addr := strings.TrimPrefix(base, "http://")
	var out strings.Builder
	if err := run(t.Context(), []string{"errand", "healthcheck"}, func(k string) string { return map[string]string{"ADDR": addr}[k] }, &out, &out); err != nil {
		t.Errorf("healthcheck of a healthy errand: %v (%s)", err, out.String())
	}
	if err := run(t.Context(), []string{"errand", "healthcheck", "-url", "http://" + freeAddr(t) + "/health"}, func(string) string { return "" }, &out, &out); err == nil {
		t.Errorf("healthcheck of nothing succeeded, want an error")
	}
}

package main

import (
	"strings"
	"testing"
	"time"
)

func TestCheckLoopback(t *testing.T) {
	tests := []struct {
		uri string
		ok  bool
	}{
		{"mongodb://127.0.0.1:27017", true},
		{"mongodb://localhost:27017/?replicaSet=rs0", true},
		{"mongodb://[::1]:27017", true},
		{"mongodb://127.0.0.1:27017,127.0.0.2:27018", true},
		{"mongodb://10.0.0.5:27017", false},
		{"mongodb://127.0.0.1:27017,mongo.example.com:27017", false},
		{"mongodb://db:27017", false},
	}
	for _, tt := range tests {
		err := checkLoopback(tt.uri)
		if (err == nil) != tt.ok {
			t.Errorf("checkLoopback(%q) = %v, want ok=%v", tt.uri, err, tt.ok)
		}
	}
}

func TestResultLine(t *testing.T) {
	r := probeResult{ops: 300, iterations: 100, elapsed: 2 * time.Second}
	for i := 1; i <= 100; i++ {
		r.latencies = append(r.latencies, time.Duration(i)*time.Millisecond)
	}
	got := r.line()
	for _, want := range []string{"wire-direct ", "items_rps=150.0", "iterations=100", "errors=0", "p50_ms=50.00", "p99_ms=99.00"} {
		if !strings.Contains(got, want) {
			t.Errorf("line %q lacks %q", got, want)
		}
	}
}

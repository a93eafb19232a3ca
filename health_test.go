package main

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// downPinger is a dependency that does not answer: with err at once, or,
// when err is nil, not before the health check's deadline.
type downPinger struct{ err error }

func (p downPinger) ping(ctx context.Context) error {
	if p.err != nil {
		return p.err
	}
	<-ctx.Done()
	return ctx.Err()
}

func TestHandlersHealth(t *testing.T) {
	tests := []struct {
		name       string
		down       map[string]pinger
		wantStatus int
		want       healthResponse
	}{
		{
			name:       "all connected",
			wantStatus: 200,
			want:       healthResponse{Status: "healthy", Services: map[string]string{"rabbitmq": "connected", "redis": "connected", "mongodb": "connected"}},
		},
		{
			name:       "redis refuses",
			down:       map[string]pinger{"redis": downPinger{err: errors.New("connection refused")}},
			wantStatus: 503,
			want:       healthResponse{Status: "unhealthy", Services: map[string]string{"rabbitmq": "connected", "redis": "disconnected", "mongodb": "connected"}},
		},
		{
			name:       "mongodb does not answer in time",
			down:       map[string]pinger{"mongodb": downPinger{}},
			wantStatus: 503,
			want:       healthResponse{Status: "unhealthy", Services: map[string]string{"rabbitmq": "connected", "redis": "connected", "mongodb": "disconnected"}},
		},
		{
			name: "everything down",
			down: map[string]pinger{
				"rabbitmq": downPinger{err: errBrokerUnavailable}, "redis": downPinger{}, "mongodb": downPinger{err: errors.New("no server")},
			},
			wantStatus: 503,
			want:       healthResponse{Status: "unhealthy", Services: map[string]string{"rabbitmq": "disconnected", "redis": "disconnected", "mongodb": "disconnected"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newHandlerFixture(t, func(d *apiParts) {
				d.healthTimeout = 50 * time.Millisecond
				for name, p := range tc.down {
					d.health[name] = p
				}
			})
			var got healthResponse
			decodeAnswer(t, f.serve(t, "GET", "/health", "", nil), tc.wantStatus, &got)
			want := tc.want
			want.Timestamp, want.Backends = handlerEpoch.Format(isoMillis), "embedded"
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("health (-want +got):\n%s", diff)
			}
		})
	}
}

package tasks

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Rate is how many tasks of a type may start per period, across every
// worker process: "100/s", "10/m", "1/h", or a count per duration such as
// "3/10s". Starts are spread evenly, one every Per/Count, as Celery's
// rate_limit spreads them; the zero Rate is no limit.
type Rate struct {
	Count int
	Per   time.Duration
}

// ParseRate reads a rate written as count/unit: s, m, h, or a Go
// duration ("500ms", "10s").
func ParseRate(s string) (Rate, error) {
	count, unit, ok := strings.Cut(strings.TrimSpace(s), "/")
	n, err := strconv.Atoi(count)
	if !ok || err != nil || n < 1 {
		return Rate{}, fmt.Errorf("rate %q: want a count of at least 1 per period, such as 100/s, 10/m or 3/10s", s)
	}
	per, ok := map[string]time.Duration{"s": time.Second, "m": time.Minute, "h": time.Hour}[unit]
	if !ok {
		if per, err = time.ParseDuration(unit); err != nil || per <= 0 {
			return Rate{}, fmt.Errorf("rate %q: the period must be s, m, h or a duration such as 10s", s)
		}
	}
	r := Rate{Count: n, Per: per}
	if r.Interval() <= 0 {
		return Rate{}, fmt.Errorf("rate %q: more than one start per nanosecond", s)
	}
	return r, nil
}

// Limited reports whether the rate limits anything.
func (r Rate) Limited() bool { return r.Count > 0 && r.Per > 0 }

// Interval is the time between two starts.
func (r Rate) Interval() time.Duration {
	if !r.Limited() {
		return 0
	}
	return r.Per / time.Duration(r.Count)
}

func (r Rate) String() string {
	if !r.Limited() {
		return ""
	}
	unit := map[time.Duration]string{time.Second: "s", time.Minute: "m", time.Hour: "h"}[r.Per]
	if unit == "" {
		unit = r.Per.String()
	}
	return strconv.Itoa(r.Count) + "/" + unit
}

// SetRate sets the rate limit of a registered type; the zero Rate lifts
// it.
func (r *Registry) SetRate(name string, rate Rate) error {
	return r.updatePolicy(name, func(p *Policy) { p.Rate = rate })
}

// SetMaxRunningPerKey sets how many tasks of a registered type with the
// same concurrency key may run at once; 0 lifts the limit.
func (r *Registry) SetMaxRunningPerKey(name string, n int) error {
	return r.updatePolicy(name, func(p *Policy) { p.MaxRunningPerKey = n })
}

func (r *Registry) updatePolicy(name string, change func(*Policy)) error {
	d, ok := r.defs[name]
	if !ok {
		return fmt.Errorf("no task type %q", name)
	}
	change(&d.Policy)
	r.defs[name] = d
	return nil
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"errand/tasks"
)

// parsedWorkflow parses body with the built-in task types, failing the
// test on an error.
func parsedWorkflow(t *testing.T, body string) workflow {
	t.Helper()
	specs := taskSpecs{registry: tasks.NewRegistry(tasks.Config{}), horizon: time.Hour, now: time.Now}
	w, err := specs.parseWorkflow(json.RawMessage(body))
	if err != nil {
		t.Fatalf("parse %s: %v", body, err)
	}
	w.ID = "wf"
	return w
}

const heavy = `{"type": "process_heavy_task", "args": {"data": "x"}}`

func TestWorkflowPlanFollowsTheShape(t *testing.T) {
	// chain[0], then a chord of two members whose then step is chain[1].then,
	// then chain[2].
	w := parsedWorkflow(t, `{"chain": [`+heavy+`, {"group": [`+heavy+`, `+heavy+`], "then": `+heavy+`}, `+heavy+`]}`)
	paths := func(p workflowPlan) (start []string, skip []string) {
		for _, s := range p.start {
			start = append(start, w.Steps[s.step].Path)
		}
		for s := range p.skip {
			skip = append(skip, w.Steps[s].Path)
		}
		slices.Sort(skip)
		return start, skip
	}
	cases := []struct {
		name              string
		ended             map[int]string
		wantStart         []string
		wantSkip          []string
		wantOutcome       nodeOutcome
		wantSkipReasonHas string
	}{
		{"nothing ended: the first step", map[int]string{}, []string{"chain[0]"}, nil, undecided, ""},
		{"first step done: both members", map[int]string{0: stateSuccess}, []string{"chain[1].group[0]", "chain[1].group[1]"}, nil, undecided, ""},
		{"one member done: nothing new", map[int]string{0: stateSuccess, 1: stateSuccess}, []string{"chain[1].group[1]"}, nil, undecided, ""},
		{"both members done: the then step", map[int]string{0: stateSuccess, 1: stateSuccess, 2: stateSuccess}, []string{"chain[1].then"}, nil, undecided, ""},
		{"then done: the last step", map[int]string{0: stateSuccess, 1: stateSuccess, 2: stateSuccess, 3: stateSuccess}, []string{"chain[2]"}, nil, undecided, ""},
		{"all done", map[int]string{0: stateSuccess, 1: stateSuccess, 2: stateSuccess, 3: stateSuccess, 4: stateSuccess}, nil, nil, succeeded, ""},
		{"first step failed: the rest never runs", map[int]string{0: stateFailure}, nil,
			[]string{"chain[1].group[0]", "chain[1].group[1]", "chain[1].then", "chain[2]"}, failed, "step chain[0] ended FAILURE"},
		{"a member failed, the other runs: wait", map[int]string{0: stateSuccess, 1: stateFailure}, []string{"chain[1].group[1]"}, nil, undecided, ""},
		{"a member failed, the other done: the then step never runs", map[int]string{0: stateSuccess, 1: stateFailure, 2: stateSuccess}, nil,
			[]string{"chain[1].then", "chain[2]"}, failed, "step chain[1].group[0] ended FAILURE"},
		{"a member revoked counts as failed", map[int]string{0: stateSuccess, 1: stateSuccess, 2: stateRevoked}, nil,
			[]string{"chain[1].then", "chain[2]"}, failed, "ended REVOKED"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := w.plan(c.ended)
			start, skip := paths(p)
			if !slices.Equal(start, c.wantStart) || !slices.Equal(skip, c.wantSkip) {
				t.Errorf("start %v skip %v, want start %v skip %v", start, skip, c.wantStart, c.wantSkip)
			}
			for _, why := range p.skip {
				if !strings.Contains(why, c.wantSkipReasonHas) {
					t.Errorf("skip reason %q, want it to name %q", why, c.wantSkipReasonHas)
				}
			}
			if got := w.outcome(w.Root, c.ended); got != c.wantOutcome {
				t.Errorf("outcome %v, want %v", got, c.wantOutcome)
			}
		})
	}
}

func TestWorkflowThenOnFailureRunsTheThenStep(t *testing.T) {
	w := parsedWorkflow(t, `{"group": [`+heavy+`, `+heavy+`], "then": `+heavy+`, "then_on_failure": true}`)
	p := w.plan(map[int]string{0: stateFailure, 1: stateSuccess})
	if len(p.start) != 1 || p.start[0].step != 2 || len(p.skip) != 0 {
		t.Fatalf("plan %+v, want the then step (2) to start", p)
	}
	if in := p.start[0].input; in == nil || in.Kind != nodeGroup || len(in.Children) != 2 || in.Then != nil {
		t.Errorf("the then step's input is %+v, want the two members", in)
	}
	if got := w.outcome(w.Root, map[int]string{0: stateFailure, 1: stateSuccess, 2: stateSuccess}); got != succeeded {
		t.Errorf("outcome %v, want success: the then step handled the failure", got)
	}
}

func TestWorkflowChainStepsGetThePreviousNode(t *testing.T) {
	w := parsedWorkflow(t, `{"chain": [`+heavy+`, {"group": [`+heavy+`, {"chain": [`+heavy+`, `+heavy+`]}]}, `+heavy+`]}`)
	// Steps: 0 chain[0]; 1 chain[1].group[0]; 2 chain[1].group[1].chain[0]; 3 ...chain[1]; 4 chain[2].
	p := w.plan(map[int]string{0: stateSuccess})
	for _, s := range p.start {
		if s.input == nil || s.input.Kind != nodeTask || s.input.Step != 0 {
			t.Errorf("step %s gets %+v, want step 0's result", w.Steps[s.step].Path, s.input)
		}
	}
	p = w.plan(map[int]string{0: stateSuccess, 1: stateSuccess, 2: stateSuccess})
	if len(p.start) != 1 || p.start[0].step != 3 || p.start[0].input.Step != 2 {
		t.Errorf("plan %+v, want step 3 with step 2's result", p.start)
	}
	p = w.plan(map[int]string{0: stateSuccess, 1: stateSuccess, 2: stateSuccess, 3: stateSuccess})
	if len(p.start) != 1 || p.start[0].step != 4 || p.start[0].input.Kind != nodeGroup {
		t.Errorf("plan %+v, want step 4 with the group's results", p.start)
	}
}

func TestWorkflowState(t *testing.T) {
	w := parsedWorkflow(t, `{"chain": [`+heavy+`, `+heavy+`]}`)
	for _, c := range []struct {
		states    map[int]string
		cancelled bool
		want      string
	}{
		{map[int]string{0: statePending, 1: statePending}, false, statePending},
		{map[int]string{0: stateProgress, 1: statePending}, false, stateProgress},
		{map[int]string{0: stateSuccess, 1: statePending}, false, stateProgress},
		{map[int]string{0: stateSuccess, 1: stateSuccess}, false, stateSuccess},
		{map[int]string{0: stateFailure, 1: stateRevoked}, false, stateFailure},
		{map[int]string{0: stateRevoked, 1: stateRevoked}, true, stateRevoked},
	} {
		w.Cancelled = nil
		if c.cancelled {
			w.Cancelled = &revocation{}
		}
		if got := w.state(c.states); got != c.want {
			t.Errorf("state of %v (cancelled %v): %s, want %s", c.states, c.cancelled, got, c.want)
		}
	}
}

func TestSubmitWorkflowRefusesBadRequests(t *testing.T) {
	f := newHandlerFixture(t)
	deep := heavy
	for range maxWorkflowDepth {
		deep = `{"chain": [` + deep + `]}`
	}
	for _, c := range []struct {
		name, body, field string
	}{
		{"not a workflow", `{"type": "process_heavy_task"}`, "body"},
		{"empty chain", `{"chain": []}`, "chain"},
		{"unknown field of a group", `{"group": [` + heavy + `], "thenn": ` + heavy + `}`, "thenn"},
		{"unknown task type", `{"chain": [{"type": "nope"}]}`, "chain[0].type"},
		{"bad argument, named in full", `{"chain": [` + heavy + `, {"group": [{"type": "process_heavy_task", "args": {"data": "x", "iterations": 0}}]}]}`, "chain[1].group[0].args.iterations"},
		{"a field tasks take but steps do not", `{"chain": [{"type": "process_heavy_task", "args": {"data": "x"}, "countdown": 5}]}`, "chain[0].countdown"},
		{"two kinds at once", `{"chain": [{"type": "process_heavy_task", "chain": []}]}`, "chain[0]"},
		{"then_on_failure without then", `{"group": [` + heavy + `], "then_on_failure": true}`, "then_on_failure"},
		{"bad priority", `{"chain": [{"type": "process_heavy_task", "args": {"data": "x"}, "priority": "urgent"}]}`, "chain[0].priority"},
		{"too deep", `{"chain": [` + deep + `]}`, strings.TrimSuffix(strings.Repeat("chain[0].", maxWorkflowDepth), ".")},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := f.serve(t, "POST", "/api/workflows", c.body, nil)
			checkErrorAnswer(t, rec, http.StatusUnprocessableEntity, "validation_error", c.field)
			if ready, _ := f.broker.depth(); ready != 0 {
				t.Errorf("%d messages queued by a refused workflow", ready)
			}
		})
	}
	many := make([]string, maxWorkflowSteps+1)
	for i := range many {
		many[i] = heavy
	}
	rec := f.serve(t, "POST", "/api/workflows", `{"group": [`+strings.Join(many, ",")+`]}`, nil)
	checkErrorAnswer(t, rec, http.StatusUnprocessableEntity, "validation_error", fmt.Sprintf("group[%d]", maxWorkflowSteps))
	checkErrorAnswer(t, f.serve(t, "GET", "/api/workflows/no-such", "", nil), http.StatusNotFound, "not_found", "")
	checkErrorAnswer(t, f.serve(t, "POST", "/api/workflows/no-such/cancel", "", nil), http.StatusNotFound, "not_found", "")
}

// stepRuns counts the runs of the test's task types, by task id, and
// keeps the Previous each run got.
type stepRuns struct {
	mu       sync.Mutex
	runs     map[string]int
	previous map[string]json.RawMessage
}

func newStepRuns() *stepRuns {
	return &stepRuns{runs: map[string]int{}, previous: map[string]json.RawMessage{}}
}

func (r *stepRuns) ran(task tasks.Task) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.runs[task.ID]++
	r.previous[task.ID] = task.Previous
}

func (r *stepRuns) count(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.runs[id]
}

func (r *stepRuns) previousOf(id string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return string(r.previous[id])
}

// workflowTestTypes are task types that show what a step got: wf_add
// adds its n to the n of the result before it; wf_sum adds the n of a
// group's results (a null counting as none); wf_fail fails for good.
func workflowTestTypes(runs *stepRuns) []tasks.Definition {
	return []tasks.Definition{
		{Name: "wf_add", Run: func(_ context.Context, task tasks.Task, raw json.RawMessage) (any, error) {
			runs.ran(task)
			var args, prev struct{ N int }
			_ = json.Unmarshal(raw, &args)
			_ = json.Unmarshal(task.Previous, &prev)
			return map[string]any{"n": prev.N + args.N}, nil
		}},
		{Name: "wf_sum", Run: func(_ context.Context, task tasks.Task, _ json.RawMessage) (any, error) {
			runs.ran(task)
			var members []*struct{ N int }
			if err := json.Unmarshal(task.Previous, &members); err != nil {
				return nil, tasks.Permanent(fmt.Errorf("previous is not a list: %w", err))
			}
			sum, missing := 0, 0
			for _, m := range members {
				if m == nil {
					missing++
					continue
				}
				sum += m.N
			}
			return map[string]any{"sum": sum, "missing": missing, "members": len(members)}, nil
		}},
		{Name: "wf_fail", Run: func(_ context.Context, task tasks.Task, _ json.RawMessage) (any, error) {
			runs.ran(task)
			return nil, tasks.Permanent(errors.New("wf_fail fails"))
		}},
	}
}

func submitWorkflow(t testing.TB, base, body string) workflowAccepted {
	t.Helper()
	var acc workflowAccepted
	if ans := apiCall(t, "POST", base+"/api/workflows", body, nil, &acc); ans.StatusCode != http.StatusAccepted {
		t.Fatalf("submit workflow: status %d, body %s", ans.StatusCode, ans.body)
	}
	return acc
}

// waitForWorkflow polls a workflow until it has ended.
func waitForWorkflow(t testing.TB, base, id string, timeout time.Duration) workflowJSON {
	t.Helper()
	var wf workflowJSON
	waitFor(t, timeout, "workflow "+id+" to end", func() bool {
		wf = workflowJSON{}
		apiCall(t, "GET", base+"/api/workflows/"+id, "", nil, &wf)
		return stateRank(wf.Status) == 2
	})
	return wf
}

func stepByPath(t testing.TB, wf workflowJSON, path string) workflowStepJSON {
	t.Helper()
	for _, s := range wf.Steps {
		if s.Path == path {
			return s
		}
	}
	t.Fatalf("workflow %s has no step %s", wf.WorkflowID, path)
	return workflowStepJSON{}
}

// TestWorkflowChainPassesResults: each step of a chain gets the result
// of the one before, and a then step the results of its group's members
// in order.
func TestWorkflowChainPassesResults(t *testing.T) {
	for name, env := range backendModes {
		t.Run(name, func(t *testing.T) {
			runs := newStepRuns()
			s := startPoolStack(t, env(t), 4, workflowTestTypes(runs)...)
			acc := submitWorkflow(t, s.base, `{"chain": [
				{"type": "wf_add", "args": {"n": 1}},
				{"type": "wf_add", "args": {"n": 2}},
				{"group": [{"type": "wf_add", "args": {"n": 10}}, {"type": "wf_add", "args": {"n": 20}}], "then": {"type": "wf_sum"}},
				{"type": "wf_add", "args": {"n": 100}}]}`)
			wf := waitForWorkflow(t, s.base, acc.WorkflowID, 30*time.Second)
			if wf.Status != stateSuccess {
				t.Fatalf("workflow ended %s: %+v", wf.Status, wf.Steps)
			}
			// 1, then 1+2 = 3; each member adds to 3: 13 and 23; the sum is 36;
			// the last step gets {"sum": 36} (no n) and adds 100.
			for path, want := range map[string]string{"chain[0]": "", "chain[1]": `{"n":1}`, "chain[2].group[0]": `{"n":3}`,
				"chain[2].group[1]": `{"n":3}`, "chain[2].then": `[{"n":13},{"n":23}]`, "chain[3]": `{"members":2,"missing":0,"sum":36}`} {
				step := stepByPath(t, wf, path)
				if got := runs.previousOf(step.TaskID); got != want {
					t.Errorf("%s got previous %s, want %s", path, got, want)
				}
				if runs.count(step.TaskID) != 1 {
					t.Errorf("%s ran %d times, want once", path, runs.count(step.TaskID))
				}
			}
			if got := stepByPath(t, wf, "chain[3]").Result["n"]; got != float64(100) {
				t.Errorf("last step's result n = %v, want 100", got)
			}
			if wf.StartedAt == nil || wf.FinishedAt == nil || wf.FinishedAt.Before(*wf.StartedAt) {
				t.Errorf("timings: started %v, finished %v", wf.StartedAt, wf.FinishedAt)
			}
			var task taskJSON
			apiCall(t, "GET", s.base+"/api/tasks/"+wf.Steps[0].TaskID, "", nil, &task)
			if task.WorkflowID != wf.WorkflowID {
				t.Errorf("a step's task names workflow %q, want %q", task.WorkflowID, wf.WorkflowID)
			}
		})
	}
}

// TestWorkflowFailureStopsTheChain: a failed step ends the chain; the
// steps after it never run and end REVOKED, saying why.
func TestWorkflowFailureStopsTheChain(t *testing.T) {
	for name, env := range backendModes {
		t.Run(name, func(t *testing.T) {
			runs := newStepRuns()
			s := startPoolStack(t, env(t), 4, workflowTestTypes(runs)...)
			acc := submitWorkflow(t, s.base, `{"chain": [{"type": "wf_add", "args": {"n": 1}}, {"type": "wf_fail"},
				{"type": "wf_add"}, {"group": [{"type": "wf_add"}, {"type": "wf_add"}]}]}`)
			wf := waitForWorkflow(t, s.base, acc.WorkflowID, 30*time.Second)
			if wf.Status != stateFailure {
				t.Errorf("workflow ended %s, want FAILURE", wf.Status)
			}
			if got := stepByPath(t, wf, "chain[1]"); got.Status != stateFailure || got.Error != "wf_fail fails" {
				t.Errorf("failing step: %s %q", got.Status, got.Error)
			}
			for _, path := range []string{"chain[2]", "chain[3].group[0]", "chain[3].group[1]"} {
				step := stepByPath(t, wf, path)
				if step.Status != stateRevoked || step.Error != "not run: step chain[1] ended FAILURE" {
					t.Errorf("%s: %s %q, want REVOKED, not run because chain[1] failed", path, step.Status, step.Error)
				}
				if n := runs.count(step.TaskID); n != 0 {
					t.Errorf("%s ran %d times after the chain failed", path, n)
				}
			}
		})
	}
}

// TestWorkflowChordWithAFailingMember: the then step does not run when a
// member fails, unless the workflow asks for then_on_failure, when it
// gets null for the failed member.
func TestWorkflowChordWithAFailingMember(t *testing.T) {
	for name, env := range backendModes {
		t.Run(name, func(t *testing.T) {
			runs := newStepRuns()
			s := startPoolStack(t, env(t), 4, workflowTestTypes(runs)...)
			members := `[{"type": "wf_add", "args": {"n": 1}}, {"type": "wf_fail"}, {"type": "wf_add", "args": {"n": 2}}]`
			plain := submitWorkflow(t, s.base, `{"group": `+members+`, "then": {"type": "wf_sum"}}`)
			anyway := submitWorkflow(t, s.base, `{"group": `+members+`, "then": {"type": "wf_sum"}, "then_on_failure": true}`)

			wf := waitForWorkflow(t, s.base, plain.WorkflowID, 30*time.Second)
			then := stepByPath(t, wf, "then")
			if wf.Status != stateFailure || then.Status != stateRevoked || runs.count(then.TaskID) != 0 {
				t.Errorf("without then_on_failure: workflow %s, then step %s, ran %d times; want FAILURE, REVOKED, never",
					wf.Status, then.Status, runs.count(then.TaskID))
			}
			if !strings.Contains(then.Error, "group[1] ended FAILURE") {
				t.Errorf("then step's reason %q, want it to name group[1]", then.Error)
			}
			for _, p := range []string{"group[0]", "group[2]"} {
				if st := stepByPath(t, wf, p).Status; st != stateSuccess {
					t.Errorf("member %s ended %s: a failed member must not stop the others", p, st)
				}
			}

			wf = waitForWorkflow(t, s.base, anyway.WorkflowID, 30*time.Second)
			then = stepByPath(t, wf, "then")
			if wf.Status != stateSuccess || then.Status != stateSuccess {
				t.Errorf("with then_on_failure: workflow %s, then step %s; want both SUCCESS", wf.Status, then.Status)
			}
			if got := runs.previousOf(then.TaskID); got != `[{"n":1},null,{"n":2}]` {
				t.Errorf("then step got %s, want the members' results with null for the failed one", got)
			}
		})
	}
}

// TestWorkflowGroupEndingAtOnceStartsThenOnce: the members of a group
// end at the same instant on workers of two pools (two processes' worth
// of connections); the then step starts exactly once, round after round.
func TestWorkflowGroupEndingAtOnceStartsThenOnce(t *testing.T) {
	for name, env := range backendModes {
		t.Run(name, func(t *testing.T) {
			const members, rounds = 12, 5
			runs := newStepRuns()
			var mu sync.Mutex
			arrived := map[string]int{}
			release := map[string]chan struct{}{}
			barrier := tasks.Definition{Name: "wf_barrier", Run: func(ctx context.Context, task tasks.Task, raw json.RawMessage) (any, error) {
				var args struct {
					Round string
					N     int
				}
				_ = json.Unmarshal(raw, &args)
				mu.Lock()
				if release[args.Round] == nil {
					release[args.Round] = make(chan struct{})
				}
				ch := release[args.Round]
				if arrived[args.Round]++; arrived[args.Round] == members {
					close(ch)
				}
				mu.Unlock()
				select {
				case <-ch:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
				return map[string]any{"n": args.N}, nil
			}}
			defs := append(workflowTestTypes(runs), barrier)
			e := env(t)
			s := startPoolStack(t, e, members, defs...)
			if name == "real" {
				// A second pool on the same queue and stores: its workers race
				// the first's.
				startPoolStack(t, e, members, defs...)
			}
			for round := range rounds {
				var group []string
				for i := range members {
					group = append(group, fmt.Sprintf(`{"type": "wf_barrier", "args": {"round": "r%d", "n": %d}}`, round, i))
				}
				acc := submitWorkflow(t, s.base, `{"group": [`+strings.Join(group, ",")+`], "then": {"type": "wf_sum"}}`)
				wf := waitForWorkflow(t, s.base, acc.WorkflowID, 30*time.Second)
				then := stepByPath(t, wf, "then")
				if wf.Status != stateSuccess || runs.count(then.TaskID) != 1 {
					t.Fatalf("round %d: workflow %s, then step ran %d times; want SUCCESS, once", round, wf.Status, runs.count(then.TaskID))
				}
				if sum := then.Result["sum"]; sum != float64(members*(members-1)/2) {
					t.Errorf("round %d: then step summed %v, want every member's n", round, sum)
				}
			}
		})
	}
}

// TestCancelWorkflow: a cancel stops the running step, ends the steps
// not started REVOKED at once, and the workflow REVOKED.
func TestCancelWorkflow(t *testing.T) {
	for name, env := range backendModes {
		t.Run(name, func(t *testing.T) {
			runs := newStepRuns()
			started := make(chan string, 1)
			hang := tasks.Definition{Name: "wf_hang", Run: func(ctx context.Context, task tasks.Task, _ json.RawMessage) (any, error) {
				started <- task.ID
				<-ctx.Done()
				return nil, ctx.Err()
			}}
			s := startPoolStack(t, env(t), 2, append(workflowTestTypes(runs), hang)...)
			acc := submitWorkflow(t, s.base, `{"chain": [{"type": "wf_hang"}, {"type": "wf_add"}, {"group": [{"type": "wf_add"}]}]}`)
			select {
			case <-started:
			case <-time.After(20 * time.Second):
				t.Fatal("the first step never started")
			}
			var cancelled workflowJSON
			if ans := apiCall(t, "POST", s.base+"/api/workflows/"+acc.WorkflowID+"/cancel", "", nil, &cancelled); ans.StatusCode != http.StatusOK {
				t.Fatalf("cancel: %d %s", ans.StatusCode, ans.body)
			}
			if cancelled.Cancelled == nil {
				t.Error("the cancelled workflow does not say it was cancelled")
			}
			if st := stepByPath(t, cancelled, "chain[1]").Status; st != stateRevoked {
				t.Errorf("a step not started is %s right after the cancel, want REVOKED", st)
			}
			wf := waitForWorkflow(t, s.base, acc.WorkflowID, 30*time.Second)
			if wf.Status != stateRevoked {
				t.Errorf("workflow ended %s, want REVOKED", wf.Status)
			}
			for _, step := range wf.Steps {
				if step.Status != stateRevoked {
					t.Errorf("step %s ended %s, want REVOKED", step.Path, step.Status)
				}
				if runs.count(step.TaskID) != 0 {
					t.Errorf("step %s ran after the cancel", step.Path)
				}
			}
			ans := apiCall(t, "POST", s.base+"/api/workflows/"+acc.WorkflowID+"/cancel", "", nil, nil)
			if ans.StatusCode != http.StatusConflict {
				t.Errorf("cancel of an ended workflow: %d, want 409", ans.StatusCode)
			}
		})
	}
}

// TestSubmitWorkflowIsIdempotent: a retried submit with the same
// Idempotency-Key gets the same workflow, and nothing runs twice.
func TestSubmitWorkflowIsIdempotent(t *testing.T) {
	runs := newStepRuns()
	s := startPoolStack(t, map[string]string{}, 2, workflowTestTypes(runs)...)
	body := `{"chain": [{"type": "wf_add", "args": {"n": 1}}, {"type": "wf_add", "args": {"n": 1}}]}`
	key := map[string]string{"Idempotency-Key": "order-7"}
	var first, again workflowAccepted
	apiCall(t, "POST", s.base+"/api/workflows", body, key, &first)
	ans := apiCall(t, "POST", s.base+"/api/workflows", body, key, &again)
	if ans.StatusCode != http.StatusAccepted || again.WorkflowID != first.WorkflowID || ans.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay: %d, workflow %s (first %s), replayed header %q", ans.StatusCode, again.WorkflowID, first.WorkflowID, ans.Header.Get("Idempotent-Replayed"))
	}
	if again.Steps[1].TaskID != first.Steps[1].TaskID {
		t.Error("the replay names other step ids")
	}
	if code := apiCall(t, "POST", s.base+"/api/workflows", `{"chain": [{"type": "wf_add"}]}`, key, nil).StatusCode; code != http.StatusUnprocessableEntity {
		t.Errorf("the key reused for another workflow: %d, want 422", code)
	}
	waitForWorkflow(t, s.base, first.WorkflowID, 10*time.Second)
	for _, step := range first.Steps {
		if runs.count(step.TaskID) != 1 {
			t.Errorf("step %s ran %d times", step.Path, runs.count(step.TaskID))
		}
	}
}

// failingOnce fails its first publish, as a broker that did not confirm
// in time does.
type failingOnce struct {
	taskPublisher
	mu     sync.Mutex
	failed bool
	sent   []taskMessage
}

func (f *failingOnce) publish(ctx context.Context, m taskMessage) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.failed {
		f.failed = true
		return errors.New("no confirm in time")
	}
	f.sent = append(f.sent, m)
	return nil
}

// TestWorkflowAdvanceTriedAgainStartsWhatItClaimed: an advance whose
// publish failed after it claimed the step, tried again by the same
// delivery, publishes the step; a try after that publishes nothing more
// once the step's run is claimed.
func TestWorkflowAdvanceTriedAgainStartsWhatItClaimed(t *testing.T) {
	ctx := context.Background()
	store := newMemoryWorkflows()
	pub := &failingOnce{}
	e := &workflowEngine{store: store, results: newMemoryStore(), statuses: newMemoryStatusStore(), revocations: newMemoryRevocations(time.Hour),
		publisher: pub, tracing: disabledTracing(), log: slog.New(slog.DiscardHandler), now: time.Now}
	w := parsedWorkflow(t, `{"chain": [`+heavy+`, `+heavy+`]}`)
	if err := store.createWorkflow(ctx, w); err != nil {
		t.Fatal(err)
	}
	if err := e.advance(ctx, w.ID, "wf.start", nil); err == nil {
		t.Fatal("the first try's publish failed, yet advance reports none")
	}
	if err := e.advance(ctx, w.ID, "wf.start", nil); err != nil {
		t.Fatal(err)
	}
	if len(pub.sent) != 1 || pub.sent[0].ID != w.Steps[0].TaskID {
		t.Fatalf("published %d messages after the second try, want the first step once", len(pub.sent))
	}
	if ok, err := store.claimRun(ctx, w.ID, 0, pub.sent[0].Workflow.Copy); err != nil || !ok {
		t.Fatal("the published copy may not run")
	}
	if err := e.advance(ctx, w.ID, "wf.start", nil); err != nil || len(pub.sent) != 1 {
		t.Errorf("a third try published again (%d messages, %v) although the step runs", len(pub.sent), err)
	}
}

// TestWorkflowStepCancelledWhileParkedEndsTheChain: a step parked for its
// concurrency key's slot and cancelled there ends REVOKED when released,
// and the chain ends with it instead of waiting for ever.
func TestWorkflowStepCancelledWhileParkedEndsTheChain(t *testing.T) {
	for name, env := range backendModes {
		t.Run(name, func(t *testing.T) {
			runs := newStepRuns()
			hold := make(chan struct{})
			held := make(chan struct{}, 1)
			gate := tasks.Definition{Name: "wf_gate", Policy: tasks.Policy{MaxRunningPerKey: 1},
				Run: func(ctx context.Context, task tasks.Task, raw json.RawMessage) (any, error) {
					runs.ran(task)
					if strings.Contains(string(raw), "hold") {
						held <- struct{}{}
						select {
						case <-hold:
						case <-ctx.Done():
						}
					}
					return map[string]any{}, nil
				}}
			s := startPoolStack(t, env(t), 4, append(workflowTestTypes(runs), gate)...)
			submitGenericTask(t, s.base, `{"type": "wf_gate", "args": {"hold": true}, "concurrency_key": "k"}`)
			<-held
			acc := submitWorkflow(t, s.base, `{"chain": [{"type": "wf_gate", "concurrency_key": "k"}, {"type": "wf_add"}]}`)
			waitFor(t, 10*time.Second, "the first step to be parked", func() bool {
				var task taskJSON
				apiCall(t, "GET", s.base+"/api/tasks/"+acc.Steps[0].TaskID, "", nil, &task)
				return task.Status == statePending && runs.count(acc.Steps[0].TaskID) == 0 && parkedCount(t, s) > 0
			})
			if code := apiCall(t, "POST", s.base+"/api/tasks/"+acc.Steps[0].TaskID+"/cancel", "", nil, nil).StatusCode; code != http.StatusOK {
				t.Fatalf("cancel of the parked step: %d", code)
			}
			close(hold)
			wf := waitForWorkflow(t, s.base, acc.WorkflowID, 20*time.Second)
			if wf.Status != stateFailure || wf.Steps[0].Status != stateRevoked || wf.Steps[1].Status != stateRevoked {
				t.Errorf("workflow %s, steps %s and %s; want FAILURE, both REVOKED", wf.Status, wf.Steps[0].Status, wf.Steps[1].Status)
			}
			if runs.count(acc.Steps[0].TaskID)+runs.count(acc.Steps[1].TaskID) != 0 {
				t.Error("a step ran after the cancel")
			}
		})
	}
}

// parkedCount is how many wf_gate tasks the stack has parked.
func parkedCount(t *testing.T, s *poolStack) float64 {
	v, _ := sampleValue(scrape(t, s.base), "errand_tasks_parked_total", map[string]string{"task_type": "wf_gate"})
	return v
}

// TestFailedWorkflowStepIsNotRunAlone: a failed step is not run again as
// a task of its own, by a retry or a requeue of its dead letter: it would
// run without what the step before handed it.
func TestFailedWorkflowStepIsNotRunAlone(t *testing.T) {
	runs := newStepRuns()
	s := startPoolStack(t, map[string]string{}, 2, workflowTestTypes(runs)...)
	acc := submitWorkflow(t, s.base, `{"chain": [{"type": "wf_add"}, {"type": "wf_fail"}]}`)
	waitForWorkflow(t, s.base, acc.WorkflowID, 10*time.Second)
	failed := acc.Steps[1].TaskID
	for _, path := range []string{"/api/tasks/" + failed + "/retry", "/api/dead-letters/" + failed + "/requeue"} {
		var e errorBody
		ans := apiCall(t, "POST", s.base+path, "", nil, &e)
		if ans.StatusCode != http.StatusConflict || e.Error != "workflow_step" || !strings.Contains(e.Detail, acc.WorkflowID) {
			t.Errorf("POST %s: %d %s, want 409 naming the workflow", path, ans.StatusCode, ans.body)
		}
	}
	if runs.count(failed) != 1 {
		t.Errorf("the failed step ran %d times", runs.count(failed))
	}
}

// TestWorkflowWebhook: a workflow with a callback_url has its final
// state POSTed there once, signed, when its last step ends, and shows
// how the delivery went.
func TestWorkflowWebhook(t *testing.T) {
	for name, env := range backendModes {
		t.Run(name, func(t *testing.T) {
			rcv := newWebhookReceiver(t, http.StatusNoContent)
			e := env(t)
			e["WEBHOOK_SECRET"], e["WEBHOOK_ALLOW_HOSTS"], e["HEAVY_TASK_DELAY"] = "wf-secret", "127.0.0.1", "1ms"
			base := startErrand(t, e)
			step := `{"type": "process_heavy_task", "args": {"data": "w", "iterations": 1}}`
			acc := submitWorkflow(t, base, `{"chain": [`+step+`, {"group": [`+step+`, {"type": "process_heavy_task", "args": {"data": "x", "iterations": 1000}, "priority": "low"}]}, `+step+`],
				"callback_url": "`+rcv.URL+`/wf"}`)
			// The second member runs for a while (HEAVY_TASK_DELAY × 1000):
			// cancel it, so the last step never runs and the workflow ends
			// REVOKED.
			waitForStatus(t, base, acc.Steps[2].TaskID, stateProgress, 20*time.Second)
			if code := apiCall(t, "POST", base+"/api/workflows/"+acc.WorkflowID+"/cancel", "", nil, nil).StatusCode; code != http.StatusOK {
				t.Fatalf("cancel: %d", code)
			}
			var wf workflowJSON
			waitFor(t, 30*time.Second, "the workflow's webhook delivered", func() bool {
				wf = workflowJSON{}
				apiCall(t, "GET", base+"/api/workflows/"+acc.WorkflowID, "", nil, &wf)
				return wf.Webhook != nil && wf.Webhook.Status == stateSuccess
			})
			if wf.Status != stateRevoked || wf.CallbackURL != rcv.URL+"/wf" || wf.Webhook.DeliveryID != acc.WorkflowID+".webhook" {
				t.Errorf("workflow %s, callback %q, delivery %+v", wf.Status, wf.CallbackURL, wf.Webhook)
			}
			time.Sleep(500 * time.Millisecond) // a second delivery, if one were queued, would come by now
			calls := rcv.received()
			if len(calls) != 1 {
				t.Fatalf("receiver got %d calls, want 1", len(calls))
			}
			c := calls[0]
			if !verifyWebhook("wf-secret", c.header.Get("Errand-Signature"), c.body, time.Now()) {
				t.Error("the signature does not verify")
			}
			if ev := c.header.Get("Errand-Event"); ev != "workflow.revoked" {
				t.Errorf("Errand-Event %q, want workflow.revoked", ev)
			}
			var sent workflowJSON
			if err := json.Unmarshal(c.body, &sent); err != nil || sent.WorkflowID != acc.WorkflowID || sent.Status != stateRevoked || len(sent.Steps) != 4 {
				t.Errorf("body %s (%v), want the workflow's final state", c.body, err)
			}
			if code := apiCall(t, "POST", base+"/api/workflows", `{"chain": [`+step+`], "callback_url": "http://10.0.0.1/x"}`, nil, nil).StatusCode; code != http.StatusUnprocessableEntity {
				t.Errorf("a callback to a private address: %d, want 422", code)
			}
		})
	}
}

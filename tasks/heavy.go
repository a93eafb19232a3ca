package tasks

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// HeavyTaskName is the guide's process_heavy_task.
const HeavyTaskName = "process_heavy_task"

// Bounds of process_heavy_task's arguments (HeavyArgs' schema says them
// too), checked when a task is submitted and again when it runs, so a
// message that bypassed the API cannot run away.
const (
	MaxIterations  = 1000
	MaxHeavyData   = 10_000
	DefaultHeavyIt = 10
)

// HeavyArgs are process_heavy_task's arguments.
type HeavyArgs struct {
	Data       string `json:"data" jsonschema:"required,maxLength=10000" jsonschema_description:"The text to process: upper-cased once per iteration."`
	Iterations int    `json:"iterations" jsonschema:"minimum=1,maximum=1000" jsonschema_description:"How many iterations to run; each takes HEAVY_TASK_DELAY."`
}

// HeavyResult is process_heavy_task's result, in the guide's shape.
type HeavyResult struct {
	TaskID         string   `json:"task_id"`
	Status         string   `json:"status"`
	ProcessedItems []string `json:"processed_items"`
	TotalProcessed int      `json:"total_processed"`
	CompletedAt    string   `json:"completed_at"`
}

// heavyTask upper-cases data once per iteration, reporting progress after
// each, as the guide's task does.
func heavyTask(cfg Config) Type[HeavyArgs] {
	return Type[HeavyArgs]{
		Name:        HeavyTaskName,
		Description: "The guide's simulated heavy task: upper-cases data once per iteration, with progress after each.",
		Defaults:    HeavyArgs{Iterations: DefaultHeavyIt},
		// The guide sets no retry policy; its longest run (1000 iterations
		// at the guide's 500 ms) is about 8 minutes.
		Policy: Policy{TimeLimit: max(15*time.Minute, 2*MaxIterations*cfg.HeavyTaskDelay)},
		Run: func(ctx context.Context, task Task, args HeavyArgs) (any, error) {
			upper := strings.ToUpper(args.Data)
			items := make([]string, 0, args.Iterations)
			for i := 1; i <= args.Iterations; i++ {
				if err := sleep(ctx, cfg.HeavyTaskDelay); err != nil {
					return nil, fmt.Errorf("iteration %d: %w", i, err)
				}
				items = append(items, fmt.Sprintf("%s_ITERATION_%d", upper, i))
				task.Report(ctx, Progress{
					Current: i,
					Total:   args.Iterations,
					Percent: i * 100 / args.Iterations,
					Status:  fmt.Sprintf("Processing iteration %d/%d", i, args.Iterations),
				})
			}
			return HeavyResult{
				TaskID:         task.ID,
				Status:         "completed",
				ProcessedItems: items,
				TotalProcessed: len(items),
				CompletedAt:    Timestamp(cfg.Now()),
			}, nil
		},
	}
}

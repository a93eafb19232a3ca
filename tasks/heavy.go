package tasks

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
)

// HeavyTaskName is the guide's process_heavy_task.
const HeavyTaskName = "process_heavy_task"

// Bounds of process_heavy_task's arguments, enforced by the API and again
// here so a message that bypassed the API cannot run away.
const (
	MaxIterations  = 1000
	MaxHeavyData   = 10_000
	DefaultHeavyIt = 10
)

// HeavyArgs are process_heavy_task's arguments.
type HeavyArgs struct {
	Data       string `json:"data"`
	Iterations int    `json:"iterations"`
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
func heavyTask(cfg Config) Handler {
	return func(ctx context.Context, taskID string, raw json.RawMessage, report ReportFunc) (any, error) {
		var args HeavyArgs
		if err := decodeArgs(raw, &args); err != nil {
			return nil, err
		}
		if args.Iterations < 1 || args.Iterations > MaxIterations {
			return nil, fmt.Errorf("%w: iterations %d outside 1..%d", ErrInvalidArgs, args.Iterations, MaxIterations)
		}
		upper := strings.ToUpper(args.Data)
		items := make([]string, 0, args.Iterations)
		for i := 1; i <= args.Iterations; i++ {
			if err := sleep(ctx, cfg.HeavyTaskDelay); err != nil {
				return nil, fmt.Errorf("iteration %d: %w", i, err)
			}
			items = append(items, fmt.Sprintf("%s_ITERATION_%d", upper, i))
			report(ctx, Progress{
				Current: i,
				Total:   args.Iterations,
				Percent: i * 100 / args.Iterations,
				Status:  fmt.Sprintf("Processing iteration %d/%d", i, args.Iterations),
			})
		}
		return HeavyResult{
			TaskID:         taskID,
			Status:         "completed",
			ProcessedItems: items,
			TotalProcessed: len(items),
			CompletedAt:    Timestamp(cfg.Now()),
		}, nil
	}
}

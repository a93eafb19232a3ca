// Command tally audits a run of errand tasks: given the ids of the tasks
// errand accepted (answered 202), it counts how many ended with a result
// in MongoDB, how many failed, how many are still running, how many are
// lost (no result and not running), and how many have more than one result
// document. It exits 1 when any task is lost or duplicated.
//
//	tally check  --ids FILE [--url URL] [--mongodb-uri URI] [--database DB] [--wait 1m] [--stack DIR]
//	tally submit N [--ids FILE] [--url URL] [--concurrency 8] [--iterations 1] [--check ...]
//
// It lives in its own module (like tools/mongowire) so errand's go.mod does
// not carry a command-line tool; scripts/tally builds and runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
)

// exitLost is the exit status of a tally that found lost or duplicated
// tasks; exitInFlight of one whose tasks are not all finished yet.
const (
	exitLost     = 1
	exitUsage    = 2
	exitInFlight = 3
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) < 2 {
		fmt.Fprintln(stderr, usage)
		return exitUsage
	}
	var err error
	code := 0
	switch args[1] {
	case "check":
		code, err = runCheck(ctx, args[2:], getenv, stdout, stderr)
	case "submit":
		code, err = runSubmit(ctx, args[2:], getenv, stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprintln(stdout, usage)
		return 0
	default:
		err = fmt.Errorf("unknown command %q", args[1])
		code = exitUsage
	}
	if err != nil {
		fmt.Fprintln(stderr, "tally:", err)
		if code == 0 {
			code = exitUsage
		}
	}
	return code
}

const usage = `usage:
  tally check  --ids FILE [--url URL] [--mongodb-uri URI] [--database DB] [--wait 1m] [--stack DIR]
  tally submit N [--ids FILE] [--url URL] [--concurrency 8] [--iterations 1] [--check] [check flags]

check reads accepted task ids from FILE (one per line; lines of k6's
--console-output with "accepted_task_id=<id>" work too), looks up their
results in MongoDB (task_results, by task_id) and asks the API about those
without one, waiting up to --wait for tasks still running. It prints
accepted, completed (SUCCESS), failed (FAILURE), in_flight, lost and
duplicated, and exits 1 if any task is lost or duplicated, 3 if some are
still running after the wait, else 0.

submit posts N process_heavy_task tasks (Idempotency-Key on each, retried
on connection errors, 502, 503 and 504), writes the accepted ids to FILE,
and with --check tallies them.

Settings not given as flags come from the environment (ERRAND_URL or
STACK_URL, MONGODB_URI, MONGODB_DATABASE), then from DIR/stack.env written
by scripts/stack up (--stack, default /tmp/errand-stack).`

// settings are where the API and the results are.
type settings struct {
	url      string
	mongoURI string
	database string
}

// addSettingFlags registers the flags that say where errand is.
func addSettingFlags(fs *flag.FlagSet) (url, mongoURI, database, stackDir *string) {
	url = fs.String("url", "", "errand API base URL (default $ERRAND_URL, $STACK_URL, the stack's, or http://127.0.0.1:8080)")
	mongoURI = fs.String("mongodb-uri", "", "MongoDB URI (default $MONGODB_URI or the stack's)")
	database = fs.String("database", "", "MongoDB database (default $MONGODB_DATABASE or the stack's)")
	stackDir = fs.String("stack", "/tmp/errand-stack", "scripts/stack directory whose stack.env fills in what is not set")
	return url, mongoURI, database, stackDir
}

// resolveSettings picks each setting from the flag, then the environment,
// then the stack's stack.env.
func resolveSettings(url, mongoURI, database, stackDir string, getenv func(string) string) settings {
	stack := readStackEnv(filepath.Join(stackDir, "stack.env"))
	first := func(vals ...string) string {
		for _, v := range vals {
			if v != "" {
				return v
			}
		}
		return ""
	}
	return settings{
		url:      strings.TrimRight(first(url, getenv("ERRAND_URL"), getenv("STACK_URL"), stack["STACK_URL"], "http://127.0.0.1:8080"), "/"),
		mongoURI: first(mongoURI, getenv("MONGODB_URI"), stack["MONGODB_URI"]),
		database: first(database, getenv("MONGODB_DATABASE"), stack["MONGODB_DATABASE"]),
	}
}

// readStackEnv reads scripts/stack's shell assignments (values quoted
// with printf %q, which for these values only escapes spaces).
func readStackEnv(path string) map[string]string {
	out := map[string]string{}
	raw, err := os.ReadFile(path)
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			out[k] = strings.ReplaceAll(v, `\`, "")
		}
	}
	return out
}

// ---------------------------------------------------------------- check

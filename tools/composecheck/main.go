// Command composecheck checks errand's Docker Compose deployment against
// errand itself and against the files the deployment mounts.
//
// Run it from this directory (the defaults point two levels up, at the
// repository root):
//
//	go run .            # or: go test ./...
//
// It loads ../../docker-compose.yml with the values of ../../.env.example,
// every profile enabled, and fails unless: the file parses; every service
// has a healthcheck (except those in healthcheckExempt, each with its
// reason); every depends_on waits for service_healthy on a service that has
// a healthcheck; every environment variable set on an errand service is one
// errand reads (a built-in list, cross-checked against errand's Go source);
// every bind-mounted host path, build context and config file exists; no
// credential is a literal (guest:guest, a password in a URL or under a
// password-like key); every variable the file uses is documented in
// .env.example, with change-me placeholders for secrets; each errand
// service's stop_grace_period outlasts its drain; prometheus.yml's targets
// are compose services and ports, and scrape every errand service; and
// nginx.conf's client_max_body_size equals errand's MAX_BODY_BYTES, its
// upstream lists exactly the API services, /health and /api/ are proxied
// and /metrics is not.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	if err := run(context.Background(), os.Args, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "composecheck:", err)
		os.Exit(1)
	}
}

// run parses the flags, runs every check and prints one line per problem.
// It returns an error when a file cannot be read or parsed, or when any
// check found a problem.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("composecheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	root := fs.String("root", "../..", "errand's repository root: docker-compose.yml, .env.example, nginx/, prometheus/ and errand's Go source")
	composeFile := fs.String("compose", "", "compose file (default ROOT/docker-compose.yml)")
	envFile := fs.String("env-file", "", "variables to load the compose file with (default ROOT/.env.example)")
	prometheusFile := fs.String("prometheus", "", "Prometheus configuration, checked if present (default ROOT/prometheus/prometheus.yml)")
	nginxFile := fs.String("nginx", "", "nginx configuration (default ROOT/nginx/nginx.conf)")
	errandEnv := fs.String("errand-env", "", "comma-separated names of the environment variables errand reads (default: the built-in list)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: composecheck takes flags only", fs.Arg(0))
	}
	orDefault := func(path, rel string) string {
		if path != "" {
			return path
		}
		return filepath.Join(*root, rel)
	}
	cfg := checkConfig{
		composeFile:       orDefault(*composeFile, "docker-compose.yml"),
		envFile:           orDefault(*envFile, ".env.example"),
		sourceDir:         *root,
		prometheusFile:    orDefault(*prometheusFile, filepath.Join("prometheus", "prometheus.yml")),
		nginxFile:         orDefault(*nginxFile, filepath.Join("nginx", "nginx.conf")),
		errandEnv:         errandEnvNames,
		healthcheckExempt: healthcheckExempt,
	}
	if *errandEnv != "" {
		cfg.errandEnv = splitList(*errandEnv)
	}

	rep, err := check(ctx, cfg)
	if err != nil {
		return err
	}
	for _, p := range rep.problems {
		fmt.Fprintln(stdout, p)
	}
	if n := len(rep.problems); n > 0 {
		return fmt.Errorf("%s: %d problem(s)", cfg.composeFile, n)
	}
	fmt.Fprintf(stdout, "composecheck: %s ok: %d services (%d errand), %s\n",
		cfg.composeFile, rep.services, rep.errandServices, strings.Join(rep.checked, ", "))
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

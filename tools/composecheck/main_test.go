package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// repoRoot is errand's repository, two levels up from this module.
const repoRoot = "../.."

// TestRepository runs every check on the repository's own
// docker-compose.yml, .env.example, prometheus.yml and nginx.conf: `go
// test ./...` here validates the deployment.
func TestRepository(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"composecheck", "-root", repoRoot}, &stdout, &stderr); err != nil {
		t.Fatalf("composecheck on the repository: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String(), " ok: ") {
		t.Errorf("got output %q, want an ok line", stdout.String())
	}
	for _, f := range []string{"docker-compose.yml", ".env.example", "nginx/nginx.conf", "prometheus/prometheus.yml"} {
		if !fileExists(filepath.Join(repoRoot, f)) {
			t.Errorf("%s is missing, so its checks did not run", f)
		}
	}
}

// TestRepositoryServices pins what the deployment must contain, so a
// service dropped from the file cannot make the checks pass vacuously.
func TestRepositoryServices(t *testing.T) {
	cfg := repoConfig()
	p, err := loadProject(context.Background(), cfg.composeFile, cfg.envFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"api-1", "api-2", "api-3", "worker-1", "worker-2", "worker-3", "nginx", "rabbitmq", "redis", "mongodb", "prometheus", "alertmanager", "grafana", "tempo", "mailpit"} {
		if _, ok := p.Services[name]; !ok {
			t.Errorf("service %s is missing", name)
		}
	}
	src, err := readErrandSource(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(repoRoot)
	errands, err := findErrandServices(p, abs, src)
	if err != nil {
		t.Fatal(err)
	}
	roles := map[string]int{}
	for _, e := range errands {
		roles[e.role]++
	}
	if roles["api"] != 3 || roles["worker"] != 3 {
		t.Errorf("got errand roles %v, want 3 api and 3 worker", roles)
	}
}

func repoConfig() checkConfig {
	return checkConfig{
		composeFile:       filepath.Join(repoRoot, "docker-compose.yml"),
		envFile:           filepath.Join(repoRoot, ".env.example"),
		sourceDir:         repoRoot,
		prometheusFile:    filepath.Join(repoRoot, "prometheus", "prometheus.yml"),
		nginxFile:         filepath.Join(repoRoot, "nginx", "nginx.conf"),
		errandEnv:         errandEnvNames,
		healthcheckExempt: healthcheckExempt,
	}
}

// fixture is a small deployment in the shape of the real one, file name
// to content. baseFixture passes every check; each broken case changes one
// thing.
type fixture map[string]string

const baseCompose = `name: composecheck-test
services:
  api-1:
    build: .
    environment:
      ROLE: api
      AMQP_URL: amqp://${RABBITMQ_USER:?required}:${RABBITMQ_PASSWORD:?required}@rabbitmq:5672/
    depends_on:
      rabbitmq:
        condition: service_healthy
    healthcheck:
      test: ["CMD", "/errand", "healthcheck"]
    stop_grace_period: 20s
  worker-1:
    build: .
    environment:
      ROLE: worker
      AMQP_URL: amqp://${RABBITMQ_USER:?required}:${RABBITMQ_PASSWORD:?required}@rabbitmq:5672/
    depends_on:
      rabbitmq:
        condition: service_healthy
    healthcheck:
      test: ["CMD", "/errand", "healthcheck"]
    stop_grace_period: 45s
  rabbitmq:
    image: rabbitmq:3.13-management
    environment:
      RABBITMQ_DEFAULT_USER: ${RABBITMQ_USER:?required}
      RABBITMQ_DEFAULT_PASS: ${RABBITMQ_PASSWORD:?required}
    expose: ["5672", "15692"]
    volumes:
      - ./rabbitmq.conf:/etc/rabbitmq/rabbitmq.conf:ro
    healthcheck:
      test: ["CMD", "rabbitmq-diagnostics", "-q", "ping"]
`

const basePrometheus = `scrape_configs:
  - job_name: errand-api
    static_configs:
      - targets: [api-1:8080]
  - job_name: errand-worker
    static_configs:
      - targets: [worker-1:8080]
  - job_name: rabbitmq
    static_configs:
      - targets: [rabbitmq:15692]
`

const baseNginx = `events {}
http {
    client_max_body_size 1m; # errand's MAX_BODY_BYTES
    upstream errand_api {
        server api-1:8080 max_fails=3 fail_timeout=10s;
        keepalive 8;
    }
    server {
        listen 80;
        location = /health { proxy_pass http://errand_api; }
        location /api/ { proxy_pass http://errand_api; }
        location /api/files { proxy_pass http://errand_api; client_max_body_size 33m; }
        location = /metrics { return 404; }
    }
}
`

func baseFixture() fixture {
	return fixture{
		"docker-compose.yml":        baseCompose,
		".env.example":              "RABBITMQ_USER=errand\nRABBITMQ_PASSWORD=change-me-rabbitmq\n",
		"Dockerfile":                "FROM scratch\n",
		"rabbitmq.conf":             "loopback_users = none\n",
		"prometheus/prometheus.yml": basePrometheus,
		"nginx/nginx.conf":          baseNginx,
	}
}

// with returns a copy of f in which old, which must occur in file, is
// replaced by new.
func (f fixture) with(t *testing.T, file, old, new string) fixture {
	t.Helper()
	if !strings.Contains(f[file], old) {
		t.Fatalf("fixture %s has no %q to replace", file, old)
	}
	out := fixture{}
	for k, v := range f {
		out[k] = v
	}
	out[file] = strings.Replace(f[file], old, new, 1)
	return out
}

// write puts f in a new directory and returns the configuration that
// checks it against errand's real source.
func (f fixture) write(t *testing.T) checkConfig {
	t.Helper()
	dir := t.TempDir()
	for name, content := range f {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return checkConfig{
		composeFile:       filepath.Join(dir, "docker-compose.yml"),
		envFile:           filepath.Join(dir, ".env.example"),
		sourceDir:         repoRoot,
		prometheusFile:    filepath.Join(dir, "prometheus", "prometheus.yml"),
		nginxFile:         filepath.Join(dir, "nginx", "nginx.conf"),
		errandEnv:         errandEnvNames,
		healthcheckExempt: map[string]string{},
	}
}

func TestBaseFixturePasses(t *testing.T) {
	rep, err := check(context.Background(), baseFixture().write(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.problems) > 0 {
		t.Fatalf("got problems in the base fixture:\n%s", strings.Join(rep.problems, "\n"))
	}
	if rep.errandServices != 2 {
		t.Errorf("got %d errand services, want 2", rep.errandServices)
	}
}

// TestBrokenDeployments feeds deliberately broken deployments and asserts
// each breakage is reported.
func TestBrokenDeployments(t *testing.T) {
	const compose, nginx, prom, env = "docker-compose.yml", "nginx/nginx.conf", "prometheus/prometheus.yml", ".env.example"
	const rabbitHealthcheck = `    healthcheck:
      test: ["CMD", "rabbitmq-diagnostics", "-q", "ping"]
`
	base := baseFixture()
	tests := []struct {
		name   string
		f      fixture
		exempt map[string]string
		want   string
	}{
		{
			name: "missing healthcheck",
			f:    base.with(t, compose, rabbitHealthcheck, ""),
			want: "healthcheck: service rabbitmq has none",
		},
		{
			name: "depending on a service without healthcheck",
			f:    base.with(t, compose, rabbitHealthcheck, ""),
			want: "depends_on: api-1 waits for rabbitmq to be healthy, but rabbitmq has no healthcheck",
		},
		{
			name: "disabled healthcheck",
			f:    base.with(t, compose, `test: ["CMD", "rabbitmq-diagnostics", "-q", "ping"]`, "disable: true"),
			want: "healthcheck: service rabbitmq disables its healthcheck",
		},
		{
			name:   "exempt service still depended on",
			f:      base.with(t, compose, rabbitHealthcheck, ""),
			exempt: map[string]string{"rabbitmq": "its image has no probe"},
			want:   "but rabbitmq has no healthcheck (its image has no probe)",
		},
		{
			name:   "stale exemption",
			f:      base,
			exempt: map[string]string{"tempo": "distroless"},
			want:   "healthcheckExempt lists tempo, which is no service",
		},
		{
			name: "wrong depends_on condition",
			f:    base.with(t, compose, "condition: service_healthy", "condition: service_started"),
			want: "depends_on: api-1 waits for rabbitmq with condition service_started; want condition: service_healthy",
		},
		{
			name: "short depends_on syntax",
			f:    base.with(t, compose, "    depends_on:\n      rabbitmq:\n        condition: service_healthy\n", "    depends_on: [rabbitmq]\n"),
			want: "depends_on: api-1 waits for rabbitmq with condition service_started",
		},
		{
			name: "misspelled env var",
			f:    base.with(t, compose, "      AMQP_URL:", "      AMQP_ULR:"),
			want: "errand env: api-1 sets AMQP_ULR, which errand does not read (did you mean AMQP_URL?)",
		},
		{
			name: "bad role",
			f:    base.with(t, compose, "ROLE: worker", "ROLE: workers"),
			want: "errand env: worker-1 sets ROLE=workers",
		},
		{
			name: "missing mount",
			f:    base.with(t, compose, "./rabbitmq.conf:", "./rabbitmq/missing.conf:"),
			want: "rabbitmq/missing.conf at /etc/rabbitmq/rabbitmq.conf, but it does not exist",
		},
		{
			name: "missing Dockerfile",
			f:    base.with(t, compose, "  api-1:\n    build: .\n", "  api-1:\n    build:\n      context: .\n      dockerfile: Dockerfile.missing\n"),
			want: "Dockerfile.missing, which does not exist",
		},
		{
			name: "guest:guest",
			f:    base.with(t, compose, "${RABBITMQ_USER:?required}:${RABBITMQ_PASSWORD:?required}@", "guest:guest@"),
			want: "uses RabbitMQ's default guest:guest",
		},
		{
			name: "literal password in a URL",
			f:    base.with(t, compose, ":${RABBITMQ_PASSWORD:?required}@", ":hunter2@"),
			want: "has a URL with a literal password",
		},
		{
			name: "literal password under a password key",
			f:    base.with(t, compose, "RABBITMQ_DEFAULT_PASS: ${RABBITMQ_PASSWORD:?required}", "RABBITMQ_DEFAULT_PASS: hunter2"),
			want: "RABBITMQ_DEFAULT_PASS is a literal",
		},
		{
			name: "password as a variable's default",
			f:    base.with(t, compose, "RABBITMQ_DEFAULT_PASS: ${RABBITMQ_PASSWORD:?required}", "RABBITMQ_DEFAULT_PASS: ${RABBITMQ_PASSWORD:-guest}"),
			want: "RABBITMQ_DEFAULT_PASS is a literal",
		},
		{
			name: "literal password on a command line",
			f:    base.with(t, compose, "    image: rabbitmq:3.13-management\n", "    image: rabbitmq:3.13-management\n    command: [\"server\", \"--requirepass\", \"hunter2\"]\n"),
			want: "the argument of --requirepass is a literal",
		},
		{
			name: "variable missing from .env.example",
			f:    base.with(t, compose, "      ROLE: api\n", "      ROLE: api\n      LOG_LEVEL: ${LOG_LEVEL:-info}\n"),
			want: "uses ${LOG_LEVEL}, which",
		},
		{
			name: "real secret in .env.example",
			f:    base.with(t, env, "change-me-rabbitmq", "s3cr3t"),
			want: "holds a value for the secret RABBITMQ_PASSWORD",
		},
		{
			name: "unused variable in .env.example",
			f:    base.with(t, env, "RABBITMQ_USER=errand\n", "RABBITMQ_USER=errand\nUNUSED=1\n"),
			want: "sets UNUSED, which the compose file does not use",
		},
		{
			name: "worker grace shorter than its drain",
			f:    base.with(t, compose, "stop_grace_period: 45s", "stop_grace_period: 30s"),
			want: "stop_grace_period: worker-1 gets 30s between SIGTERM and SIGKILL, but errand may need 35s",
		},
		{
			name: "api with Docker's default grace",
			f:    base.with(t, compose, "    stop_grace_period: 20s\n", ""),
			want: "stop_grace_period: api-1 gets 10s",
		},
		{
			name: "drain raised without the grace",
			f:    base.with(t, compose, "      ROLE: worker\n", "      ROLE: worker\n      DRAIN_TIMEOUT: 60s\n"),
			want: "worker-1 gets 45s between SIGTERM and SIGKILL, but errand may need 1m5s",
		},
		{
			name: "prometheus target on a missing service",
			f:    base.with(t, prom, "[worker-1:8080]", "[worker-2:8080]"),
			want: "target worker-2:8080, but there is no service worker-2",
		},
		{
			name: "errand service not scraped",
			f:    base.with(t, prom, "[worker-1:8080]", "[]"),
			want: "errand service worker-1 is not scraped",
		},
		{
			name: "prometheus target on the wrong port",
			f:    base.with(t, compose, "      ROLE: api\n", "      ROLE: api\n      ADDR: :9000\n"),
			want: "target api-1:8080, but api-1 listens on [9000]",
		},
		{
			name: "nginx body limit larger than errand's",
			f:    base.with(t, nginx, "client_max_body_size 1m;", "client_max_body_size 10m;"),
			want: "client_max_body_size is 10485760 bytes, but errand's MAX_BODY_BYTES is 1048576",
		},
		{
			name: "errand's body limit changed without nginx's",
			f:    base.with(t, compose, "      ROLE: api\n", "      ROLE: api\n      MAX_BODY_BYTES: \"2097152\"\n"),
			want: "client_max_body_size is 1048576 bytes, but errand's MAX_BODY_BYTES is 2097152 on api-1",
		},
		{
			name: "nginx file limit below errand's",
			f:    base.with(t, nginx, "client_max_body_size 33m;", "client_max_body_size 32m;"),
			want: "client_max_body_size of location /api/files is 33554432 bytes, but errand's FILE_MAX_BYTES is 33554432",
		},
		{
			name: "errand's file limit changed without nginx's",
			f:    base.with(t, compose, "      ROLE: api\n", "      ROLE: api\n      FILE_MAX_BYTES: \"104857600\"\n"),
			want: "client_max_body_size of location /api/files is 34603008 bytes, but errand's FILE_MAX_BYTES is 104857600 on api-1",
		},
		{
			name: "files held to the JSON body limit",
			f:    base.with(t, nginx, " client_max_body_size 33m;", ""),
			want: "nginx: /api/files has no client_max_body_size of its own",
		},
		{
			name: "files not proxied",
			f:    base.with(t, nginx, "location /api/files { proxy_pass http://errand_api; client_max_body_size 33m; }", "location /api/files { return 404; client_max_body_size 33m; }"),
			want: "nginx: /api/files is not proxied",
		},
		{
			name: "upstream server that is no API service",
			f:    base.with(t, nginx, "server api-1:8080", "server worker-1:8080"),
			want: "upstream server worker-1:8080 is no errand API service",
		},
		{
			name: "metrics proxied",
			f:    base.with(t, nginx, "location = /metrics { return 404; }", "location / { proxy_pass http://errand_api; }"),
			want: "nginx: /metrics is proxied by location",
		},
		{
			name: "health not proxied",
			f:    base.with(t, nginx, "location = /health { proxy_pass http://errand_api; }", ""),
			want: "nginx: /health is not proxied",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.f.write(t)
			if tt.exempt != nil {
				cfg.healthcheckExempt = tt.exempt
			}
			rep, err := check(context.Background(), cfg)
			if err != nil {
				t.Fatalf("check: %v", err)
			}
			for _, p := range rep.problems {
				if strings.Contains(p, tt.want) {
					t.Log(p)
					return
				}
			}
			t.Errorf("got problems:\n%s\nwant one containing %q", strings.Join(rep.problems, "\n"), tt.want)
		})
	}
}

// TestUnparsableCompose: a file compose-go rejects is an error, not a
// list of problems.
func TestUnparsableCompose(t *testing.T) {
	for name, f := range map[string]fixture{
		"bad YAML":                baseFixture().with(t, "docker-compose.yml", "    build: .\n", "    build: [.\n"),
		"unknown attribute":       baseFixture().with(t, "docker-compose.yml", "    build: .\n", "    build: .\n    helthcheck: {}\n"),
		"required variable unset": baseFixture().with(t, ".env.example", "RABBITMQ_PASSWORD=change-me-rabbitmq\n", ""),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := check(context.Background(), f.write(t))
			if err == nil {
				t.Fatal("got no error, want one")
			}
			t.Log(err)
		})
	}
}

// TestRunFails checks the command's exit path: problems make run fail.
func TestRunFails(t *testing.T) {
	cfg := baseFixture().with(t, "docker-compose.yml", "condition: service_healthy", "condition: service_started").write(t)
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"composecheck", "-root", repoRoot,
		"-compose", cfg.composeFile, "-env-file", cfg.envFile, "-prometheus", cfg.prometheusFile, "-nginx", cfg.nginxFile}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "problem(s)") {
		t.Fatalf("got error %v, want one counting problems", err)
	}
	if !strings.Contains(stdout.String(), "service_started") {
		t.Errorf("got output %q, want the depends_on problem", stdout.String())
	}
}

func TestCrossCheck(t *testing.T) {
	src, err := readErrandSource(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	if got := src.crossCheck(errandEnvNames); len(got) > 0 {
		t.Errorf("errandEnvNames and errand's source disagree:\n%s", strings.Join(got, "\n"))
	}
	var withoutAddr []string
	for _, n := range errandEnvNames {
		if n != "ADDR" {
			withoutAddr = append(withoutAddr, n)
		}
	}
	got := strings.Join(src.crossCheck(append(withoutAddr, "NO_SUCH_SETTING")), "\n")
	for _, want := range []string{"NO_SUCH_SETTING is in composecheck's list but errand's source no longer reads it", "errand reads ADDR (config.go, healthcheck.go)"} {
		if !strings.Contains(got, want) {
			t.Errorf("got %q, want it to contain %q", got, want)
		}
	}
}

// TestSourceDefaults evaluates defaults written the ways config.go writes
// them.
func TestSourceDefaults(t *testing.T) {
	dir := t.TempDir()
	const config = `package main

const roleAll = "all"

func parseConfig(getenv func(string) string) {
	env := func(name, def string) string { return def }
	envInt := func(name string, def int) int { return def }
	envDuration := func(name string, def time.Duration) time.Duration { return def }
	_ = env("ROLE", roleAll)
	_ = env("ADDR", ":8080")
	_ = int64(envInt("MAX_BODY_BYTES", 1<<20))
	_ = envDuration("DRAIN_TIMEOUT", 30*time.Second)
	_ = envDuration("HEAVY_TASK_DELAY", 500*time.Millisecond)
	_ = envDuration("RESULT_TTL", (24*time.Hour)/2)
	_ = getenv("API_KEYS")
}
`
	if err := os.WriteFile(filepath.Join(dir, "config.go"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := readErrandSource(dir)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"ROLE": "all", "ADDR": ":8080", "API_KEYS": ""} {
		if got, err := src.defaultString(name); err != nil || got != want {
			t.Errorf("defaultString(%s) = %q, %v; want %q", name, got, err, want)
		}
	}
	if got, err := src.defaultInt("MAX_BODY_BYTES"); err != nil || got != 1048576 {
		t.Errorf("defaultInt(MAX_BODY_BYTES) = %d, %v; want 1048576", got, err)
	}
	for name, want := range map[string]time.Duration{"DRAIN_TIMEOUT": 30 * time.Second, "HEAVY_TASK_DELAY": 500 * time.Millisecond, "RESULT_TTL": 12 * time.Hour} {
		if got, err := src.defaultDuration(name); err != nil || got != want {
			t.Errorf("defaultDuration(%s) = %s, %v; want %s", name, got, err, want)
		}
	}
	if _, err := readErrandSource(t.TempDir()); err == nil {
		t.Error("readErrandSource of a directory without config.go: got no error")
	}
}

func TestNormalizeVariables(t *testing.T) {
	tests := []struct {
		in        string
		wantOnly  bool // entirely from the environment
		wantValue string
	}{
		{in: "${A}", wantOnly: true},
		{in: "${A:?set A in .env}", wantOnly: true},
		{in: "${A:-}", wantOnly: true},
		{in: "$A", wantOnly: true},
		{in: "${A:-guest}", wantValue: "guest"},
		{in: "${A-x}${B}", wantValue: "x" + fromEnv},
		{in: "literal", wantValue: "literal"},
		{in: "$${NOT_COMPOSE}", wantValue: "{NOT_COMPOSE}"},
	}
	for _, tt := range tests {
		got := normalizeVariables(tt.in)
		if onlyFromEnv(got) != tt.wantOnly || (!tt.wantOnly && got != tt.wantValue) {
			t.Errorf("normalizeVariables(%q) = %q (only from env: %v), want %q (only from env: %v)", tt.in, got, onlyFromEnv(got), tt.wantValue, tt.wantOnly)
		}
	}
}

func TestMatchNginxLocation(t *testing.T) {
	locs := parseNginxLocations(stripNginxComments(`
        location = /health { proxy_pass http://a; }
        location /api/ { proxy_pass http://a; }   # the API
        location / { return 404; }
        location ~ ^/metr { proxy_pass http://a; }
        location ^~ /static/ { root /srv; }
        location ~ \.css$ { return 403; }
        location @fallback { return 502; }
`))
	tests := map[string]string{
		"/health":       "= /health",
		"/health/x":     " /",
		"/api/items":    " /api/",
		"/metrics":      "~ ^/metr",
		"/static/a.css": "^~ /static/",
		"/b.css":        "~ \\.css$",
		"/other":        " /",
	}
	for path, want := range tests {
		loc, ok := matchNginxLocation(locs, path)
		if got := loc.modifier + " " + loc.path; !ok || got != want {
			t.Errorf("matchNginxLocation(%s) = %q, %v; want %q", path, got, ok, want)
		}
	}
}

// TestScaleOutRedisIsTheSentinelTestsTopology: the scale-out profile runs
// what scripts/ha runs on loopback for errand's TestHighAvailabilityDrills: a primary, a
// replica of it and three Sentinels, which monitor it under one name with
// a quorum of 2; and the REDIS_URL .env.example shows for the profile
// names those Sentinels and that primary.
func TestScaleOutRedisIsTheSentinelTestsTopology(t *testing.T) {
	cfg := repoConfig()
	p, err := loadProject(context.Background(), cfg.composeFile, cfg.envFile)
	if err != nil {
		t.Fatal(err)
	}
	replica, ok := p.Services["redis-replica"]
	if !ok || !strings.Contains(strings.Join(replica.Command, " "), "--replicaof redis 6379") || !slices.Contains(replica.Profiles, "scale-out") {
		t.Errorf("redis-replica: %v, profiles %v; want a replica of redis:6379 in the scale-out profile", replica.Command, replica.Profiles)
	}
	var sentinels []string
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("redis-sentinel-%d", i)
		s, ok := p.Services[name]
		if !ok || !slices.Contains(s.Profiles, "scale-out") || len(s.Configs) != 1 || s.Configs[0].Source != "redis-sentinel" {
			t.Errorf("%s: want it in the scale-out profile, with the redis-sentinel config", name)
			continue
		}
		sentinels = append(sentinels, name+":26379")
	}
	script, err := os.ReadFile(filepath.Join(repoRoot, "scripts", "ha"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^sentinel monitor errand \S+ .+ 2$`).Match(script) || !strings.Contains(string(script), "replicaof 127.0.0.1") {
		t.Errorf("scripts/ha no longer runs a replica and Sentinels monitoring errand with a quorum of 2: keep it and the profile alike")
	}
	conf := p.Configs["redis-sentinel"].Content
	if !strings.Contains(conf, "sentinel monitor errand redis 6379 2\n") || !strings.Contains(conf, "sentinel auth-pass errand ") {
		t.Errorf("the Sentinels' configuration does not monitor redis:6379 as errand with a quorum of 2 and its password:\n%s", conf)
	}
	env, err := os.ReadFile(cfg.envFile)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("REDIS_URL=redis://%s/0?master_name=errand&password=change-me-redis-password&addr=%s&addr=%s", sentinels[0], sentinels[1], sentinels[2])
	if len(sentinels) != 3 || !strings.Contains(string(env), want) {
		t.Errorf("%s does not show the scale-out REDIS_URL %s", cfg.envFile, want)
	}
}

// TestRabbitMQNodesPauseInAMinority: every RabbitMQ node of the compose
// file handles a partition as scripts/ha's nodes do in errand's
// TestHighAvailabilityDrills (pause_minority). Their timings differ on
// purpose: the drill's nodes notice a partition after 10 s and its
// Sentinels call a primary down after 1 s, the compose file's after
// RabbitMQ's default 60 s and 5 s.
func TestRabbitMQNodesPauseInAMinority(t *testing.T) {
	cfg := repoConfig()
	p, err := loadProject(context.Background(), cfg.composeFile, cfg.envFile)
	if err != nil {
		t.Fatal(err)
	}
	const want = "cluster_partition_handling = pause_minority\n"
	script, err := os.ReadFile(filepath.Join(repoRoot, "scripts", "ha"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(script), want) {
		t.Fatalf("scripts/ha no longer configures %q: keep the compose file and the drill's nodes alike", want)
	}
	if got := p.Configs["rabbitmq-partitions"].Content; got != want {
		t.Errorf("config rabbitmq-partitions = %q, want %q", got, want)
	}
	for _, name := range []string{"rabbitmq", "rabbitmq-2", "rabbitmq-3"} {
		s, ok := p.Services[name]
		mounted := false
		for _, c := range s.Configs {
			mounted = mounted || (c.Source == "rabbitmq-partitions" && strings.HasPrefix(c.Target, "/etc/rabbitmq/conf.d/"))
		}
		if !ok || !mounted {
			t.Errorf("%s does not mount rabbitmq-partitions in /etc/rabbitmq/conf.d/", name)
		}
	}
}

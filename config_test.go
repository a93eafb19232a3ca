package main

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// configDefaults is the configuration parseConfig gives with no
// environment and no flags.
var configDefaults = config{
	Addr:            ":8080",
	Role:            roleAll,
	MongoDatabase:   "myapp",
	Workers:         32,
	HeavyTaskDelay:  500 * time.Millisecond,
	EmailStepDelay:  2 * time.Second,
	QueueName:       "errand.tasks",
	QueueType:       queueClassic,
	KeyPrefix:       "errand:",
	ResultTTL:       24 * time.Hour,
	DrainTimeout:    30 * time.Second,
	MaxBodyBytes:    1 << 20,
	FileMaxBytes:    32 << 20,
	FetchTimeout:    30 * time.Second,
	WebhookTimeout:  10 * time.Second,
	KeySlotLease:    30 * time.Second,
	ImageMaxPixels:  50_000_000,
	PublishTimeout:  5 * time.Second,
	HealthTimeout:   2 * time.Second,
	ShutdownTimeout: 10 * time.Second,
	ScheduleHorizon: 30 * 24 * time.Hour,
	SMTPFrom:        "errand@localhost",
}

// externalEnv names all three services, as a deployment on RabbitMQ,
// Redis and MongoDB does.
var externalEnv = map[string]string{
	"AMQP_URL":    "amqp://guest:guest@rabbitmq:5672/",
	"REDIS_URL":   "redis://redis:6379/0",
	"MONGODB_URI": "mongodb://mongodb:27017",
}

// parseTestConfig runs parseConfig on env as the whole environment and
// args after the program name.
func parseTestConfig(t testing.TB, env map[string]string, args ...string) (config, error) {
	t.Helper()
	return parseConfig(append([]string{"errand"}, args...), func(k string) string { return env[k] }, io.Discard)
}

// configEnvPlus returns base with extra added.
func configEnvPlus(base map[string]string, extra map[string]string) map[string]string {
	env := map[string]string{}
	for k, v := range base {
		env[k] = v
	}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

func TestConfigDefaults(t *testing.T) {
	cfg, err := parseTestConfig(t, nil)
	if err != nil {
		t.Fatalf("parseConfig: got %v, want no error", err)
	}
	if diff := cmp.Diff(configDefaults, cfg); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
	if !cfg.embedded() || !cfg.runsAPI() || !cfg.runsWorker() {
		t.Errorf("embedded, runsAPI, runsWorker: got %v, %v, %v, want all true", cfg.embedded(), cfg.runsAPI(), cfg.runsWorker())
	}
}

func TestConfigValues(t *testing.T) {
	external := func(c config) config {
		c.AMQPURL, c.RedisURL, c.MongoURI = externalEnv["AMQP_URL"], externalEnv["REDIS_URL"], externalEnv["MONGODB_URI"]
		return c
	}
	tests := []struct {
		name         string
		env          map[string]string
		args         []string
		want         config
		wantEmbedded bool
		wantAPI      bool
		wantWorker   bool
	}{
		{
			name: "every variable from the environment",
			env: configEnvPlus(externalEnv, map[string]string{
				"ADDR": "127.0.0.1:9000", "ROLE": "api", "MONGODB_DATABASE": "errand", "WORKERS": "5",
				"HEAVY_TASK_DELAY": "20ms", "EMAIL_STEP_DELAY": "0s", "QUEUE_NAME": "q", "QUEUE_TYPE": "quorum", "REDIS_KEY_PREFIX": "p:",
				"RESULT_TTL": "1h", "DRAIN_TIMEOUT": "5s", "MAX_BODY_BYTES": "2048", "FILE_MAX_BYTES": "4096", "PUBLISH_TIMEOUT": "1s",
				"FETCH_ALLOW_HOSTS": "127.0.0.1,files.internal:9000", "FETCH_TIMEOUT": "7s", "IMAGE_MAX_PIXELS": "1000000",
				"WEBHOOK_SECRET": "whs", "WEBHOOK_ALLOW_HOSTS": "127.0.0.1", "WEBHOOK_TIMEOUT": "3s",
				"TASK_RATE_LIMITS": "process_image=2/s", "MAX_RUNNING_PER_KEY": "4,process_image=1", "KEY_SLOT_LEASE": "9s",
				"HEALTH_TIMEOUT": "500ms", "SHUTDOWN_TIMEOUT": "3s", "PPROF_ADDR": "127.0.0.1:6060", "SCHEDULE_HORIZON": "48h",
				"SMTP_ADDR": "mail:25", "SMTP_FROM": "noreply@example.com", "SMTP_USERNAME": "u", "SMTP_PASSWORD": "secret",
			}),
			want: external(config{
				Addr: "127.0.0.1:9000", Role: roleAPI, MongoDatabase: "errand", Workers: 5,
				HeavyTaskDelay: 20 * time.Millisecond, EmailStepDelay: 0, QueueName: "q", QueueType: queueQuorum, KeyPrefix: "p:",
				ResultTTL: time.Hour, DrainTimeout: 5 * time.Second, MaxBodyBytes: 2048, FileMaxBytes: 4096, PublishTimeout: time.Second,
				FetchAllowHosts: "127.0.0.1,files.internal:9000", FetchTimeout: 7 * time.Second, ImageMaxPixels: 1_000_000,
				WebhookSecret: "whs", WebhookAllowHosts: "127.0.0.1", WebhookTimeout: 3 * time.Second,
				TaskRateLimits: "process_image=2/s", MaxRunningPerKey: "4,process_image=1", KeySlotLease: 9 * time.Second,
				HealthTimeout: 500 * time.Millisecond, ShutdownTimeout: 3 * time.Second, PprofAddr: "127.0.0.1:6060", ScheduleHorizon: 48 * time.Hour,
				SMTPAddr: "mail:25", SMTPFrom: "noreply@example.com", SMTPUsername: "u", SMTPPassword: "secret",
			}),
			wantAPI: true,
		},
		{
			name: "flags override the environment",
			env:  configEnvPlus(externalEnv, map[string]string{"WORKERS": "5", "ADDR": ":9000", "ROLE": "api", "HEAVY_TASK_DELAY": "1s"}),
			args: []string{"-workers", "3", "-addr=:9001", "-role", "worker", "-heavy-task-delay", "10ms", "-queue", "flagged"},
			want: func() config {
				c := external(configDefaults)
				c.Workers, c.Addr, c.Role, c.HeavyTaskDelay, c.QueueName = 3, ":9001", roleWorker, 10*time.Millisecond, "flagged"
				return c
			}(),
			wantWorker: true,
		},
		{
			name: "flags alone",
			args: []string{"-workers", "3", "-max-body-bytes", "4096", "-mongodb-database", "other"},
			want: func() config {
				c := configDefaults
				c.Workers, c.MaxBodyBytes, c.MongoDatabase = 3, 4096, "other"
				return c
			}(),
			wantEmbedded: true, wantAPI: true, wantWorker: true,
		},
		{
			name: "service URLs by flag",
			args: []string{"-amqp-url", externalEnv["AMQP_URL"], "-redis-url", externalEnv["REDIS_URL"], "-mongodb-uri", externalEnv["MONGODB_URI"], "-role", "worker"},
			want: func() config {
				c := external(configDefaults)
				c.Role = roleWorker
				return c
			}(),
			wantWorker: true,
		},
		{
			name:    "ROLE=all on external backends",
			env:     configEnvPlus(externalEnv, map[string]string{"ROLE": "all"}),
			want:    external(configDefaults),
			wantAPI: true, wantWorker: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseTestConfig(t, tc.env, tc.args...)
			if err != nil {
				t.Fatalf("parseConfig: got %v, want no error", err)
			}
			if diff := cmp.Diff(tc.want, cfg); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
			got := [3]bool{cfg.embedded(), cfg.runsAPI(), cfg.runsWorker()}
			if want := [3]bool{tc.wantEmbedded, tc.wantAPI, tc.wantWorker}; got != want {
				t.Errorf("embedded, runsAPI, runsWorker: got %v, want %v", got, want)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want []string // each must appear in the error
	}{
		{name: "unknown ROLE", env: configEnvPlus(externalEnv, map[string]string{"ROLE": "scheduler"}), want: []string{`ROLE="scheduler"`}},
		{name: "unknown role flag", env: externalEnv, args: []string{"-role", "both"}, want: []string{`ROLE="both"`}},
		{name: "AMQP_URL not amqp", env: configEnvPlus(externalEnv, map[string]string{"AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/,http://127.0.0.1:5672/"}), want: []string{"AMQP_URL http://127.0.0.1:5672/"}},
		{name: "unknown QUEUE_TYPE", env: configEnvPlus(externalEnv, map[string]string{"QUEUE_TYPE": "stream"}), want: []string{`QUEUE_TYPE="stream"`, "classic or quorum"}},
		{name: "WORKERS=0", env: map[string]string{"WORKERS": "0"}, want: []string{"WORKERS=0"}},
		{name: "WORKERS=10001", env: map[string]string{"WORKERS": "10001"}, want: []string{"WORKERS=10001"}},
		{name: "WORKERS not a number", env: map[string]string{"WORKERS": "x"}, want: []string{`WORKERS="x"`, "not an integer"}},
		{name: "workers flag 0", args: []string{"-workers", "0"}, want: []string{"WORKERS=0"}},
		{name: "workers flag not a number", args: []string{"-workers", "x"}, want: []string{"parse flags", "workers"}},
		{name: "HEAVY_TASK_DELAY not a duration", env: map[string]string{"HEAVY_TASK_DELAY": "abc"}, want: []string{`HEAVY_TASK_DELAY="abc"`, "not a duration"}},
		{name: "HEAVY_TASK_DELAY without a unit", env: map[string]string{"HEAVY_TASK_DELAY": "500"}, want: []string{`HEAVY_TASK_DELAY="500"`}},
		{name: "negative EMAIL_STEP_DELAY", env: map[string]string{"EMAIL_STEP_DELAY": "-1s"}, want: []string{"EMAIL_STEP_DELAY=-1s"}},
		{name: "RESULT_TTL zero", env: map[string]string{"RESULT_TTL": "0s"}, want: []string{"RESULT_TTL=0s"}},
		{name: "MAX_BODY_BYTES too small", env: map[string]string{"MAX_BODY_BYTES": "100"}, want: []string{"MAX_BODY_BYTES=100"}},
		{name: "FILE_MAX_BYTES too small", env: map[string]string{"FILE_MAX_BYTES": "100"}, want: []string{"FILE_MAX_BYTES=100"}},
		{name: "FETCH_TIMEOUT zero", env: map[string]string{"FETCH_TIMEOUT": "0s"}, want: []string{"FETCH_TIMEOUT=0s"}},
		{name: "IMAGE_MAX_PIXELS zero", env: map[string]string{"IMAGE_MAX_PIXELS": "0"}, want: []string{"IMAGE_MAX_PIXELS=0"}},
		{name: "several errors at once", env: map[string]string{"WORKERS": "x", "HEAVY_TASK_DELAY": "abc"}, want: []string{"WORKERS", "HEAVY_TASK_DELAY"}},
		{name: "only AMQP_URL", env: map[string]string{"AMQP_URL": externalEnv["AMQP_URL"]}, want: []string{"REDIS_URL is empty", "MONGODB_URI is empty"}},
		{name: "only REDIS_URL", env: map[string]string{"REDIS_URL": externalEnv["REDIS_URL"]}, want: []string{"AMQP_URL is empty", "MONGODB_URI is empty"}},
		{name: "only MONGODB_URI", env: map[string]string{"MONGODB_URI": externalEnv["MONGODB_URI"]}, want: []string{"AMQP_URL is empty", "REDIS_URL is empty"}},
		{name: "two of the three", env: map[string]string{"AMQP_URL": externalEnv["AMQP_URL"], "REDIS_URL": externalEnv["REDIS_URL"]}, want: []string{"MONGODB_URI is empty"}},
		{name: "ROLE=worker in embedded mode", env: map[string]string{"ROLE": "worker"}, want: []string{"ROLE=worker needs AMQP_URL, REDIS_URL and MONGODB_URI"}},
		{name: "ROLE=api in embedded mode", env: map[string]string{"ROLE": "api"}, want: []string{"ROLE=api needs"}},
		{name: "unknown flag", args: []string{"-verbose"}, want: []string{"parse flags"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseTestConfig(t, tc.env, tc.args...)
			if err == nil {
				t.Fatalf("parseConfig: got %+v and no error, want an error", cfg)
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error: got %q, want it to contain %q", err, want)
				}
			}
		})
	}
}

func TestConfigRedactURL(t *testing.T) {
	tests := []struct {
		name, raw, want string
	}{
		{name: "empty", raw: "", want: ""},
		{name: "no password", raw: "redis://redis:6379/0", want: "redis://redis:6379/0"},
		{name: "user and password", raw: "amqp://guest:s3cret@rabbitmq:5672/", want: "amqp://guest:xxxxx@rabbitmq:5672/"},
		{name: "password only", raw: "redis://:s3cret@redis:6379/0", want: "redis://:xxxxx@redis:6379/0"},
		{name: "several hosts and options", raw: "mongodb://app:s3cret@m1:27017,m2:27017/db?replicaSet=rs0", want: "mongodb://app:xxxxx@m1:27017,m2:27017/db?replicaSet=rs0"},
		{name: "escaped characters in the password", raw: "amqp://guest:s3cret%2F%40%23@rabbitmq:5672/", want: "amqp://guest:xxxxx@rabbitmq:5672/"},
		{name: "unescaped @ in the password", raw: "amqp://guest:s3cret@x@rabbitmq:5672/", want: "amqp://guest:xxxxx@rabbitmq:5672/"},
		{name: "unparsable", raw: "mongodb://app:s3cret@[::1", want: "(unparsable)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := redactURL(tc.raw)
			if got != tc.want {
				t.Errorf("redactURL(%q): got %q, want %q", tc.raw, got, tc.want)
			}
			if strings.Contains(got, "s3cret") {
				t.Errorf("redactURL(%q) = %q shows the password", tc.raw, got)
			}
		})
	}
}

// TestConfigLogAttrsHidePasswords checks the configuration's log line,
// which run writes at start, for the services' passwords.
func TestConfigLogAttrsHidePasswords(t *testing.T) {
	cfg, err := parseTestConfig(t, map[string]string{
		"AMQP_URL":    "amqp://guest:amqp-s3cret@rabbitmq:5672/",
		"REDIS_URL":   "redis://:redis-s3cret@redis:6379/0",
		"MONGODB_URI": "mongodb://app:mongo-s3cret@mongodb:27017",
	})
	if err != nil {
		t.Fatalf("parseConfig: got %v, want no error", err)
	}
	line := fmt.Sprint(cfg.logAttrs()...)
	if strings.Contains(line, "s3cret") {
		t.Errorf("log attributes %q show a password", line)
	}
}

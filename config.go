package main

import (
	"errand/tasks"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// config is errand's effective configuration. Every field comes from an
// environment variable, and a flag of the same meaning overrides it, so
// containers configure errand by environment and people by flags.
type config struct {
	Addr              string
	Role              string
	AMQPURL           string
	RedisURL          string
	MongoURI          string
	MongoDatabase     string
	Workers           int
	HeavyTaskDelay    time.Duration
	EmailStepDelay    time.Duration
	QueueName         string
	QueueType         string
	KeyPrefix         string
	ResultTTL         time.Duration
	DrainTimeout      time.Duration
	MaxBodyBytes      int64
	FileMaxBytes      int64
	FetchAllowHosts   string
	FetchTimeout      time.Duration
	WebhookSecret     string
	WebhookAllowHosts string
	WebhookTimeout    time.Duration
	TaskRateLimits    string
	MaxRunningPerKey  string
	KeySlotLease      time.Duration
	ImageMaxPixels    int
	PublishTimeout    time.Duration
	HealthTimeout     time.Duration
	ShutdownTimeout   time.Duration
	ScheduleHorizon   time.Duration
	SMTPAddr          string
	SMTPFrom          string
	SMTPUsername      string
	SMTPPassword      string
	APIKeys           string
	RateLimit         float64
	RateBurst         int
	PprofAddr         string
}

const (
	roleAll    = "all"
	roleAPI    = "api"
	roleWorker = "worker"
)

// embedded reports whether errand runs on its in-process backends: the
// zero-install mode used when no external service is configured at all.
func (c config) embedded() bool {
	return c.AMQPURL == "" && c.RedisURL == "" && c.MongoURI == ""
}

func (c config) runsAPI() bool    { return c.Role == roleAll || c.Role == roleAPI }
func (c config) runsWorker() bool { return c.Role == roleAll || c.Role == roleWorker }

// parseConfig reads the environment through getenv, then the flags in args
// (args[0] is the program name). Flags mirror the environment variables.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	var cfg config
	var errs []error
	envInt := func(name string, def int) int {
		v := env(name, strconv.Itoa(def))
		n, err := strconv.Atoi(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: not an integer", name, v))
		}
		return n
	}
	envFloat := func(name string, def float64) float64 {
		v := env(name, strconv.FormatFloat(def, 'g', -1, 64))
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: not a number", name, v))
		}
		return f
	}
	envDuration := func(name string, def time.Duration) time.Duration {
		v := env(name, def.String())
		d, err := time.ParseDuration(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: not a duration (for example 500ms, 2s)", name, v))
		}
		return d
	}

	fs := flag.NewFlagSet("errand", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Addr, "addr", env("ADDR", ":8080"), "HTTP listen address (ADDR)")
	fs.StringVar(&cfg.Role, "role", env("ROLE", roleAll), "all, api or worker (ROLE)")
	fs.StringVar(&cfg.AMQPURL, "amqp-url", env("AMQP_URL", ""), "RabbitMQ URL, or the URLs of a cluster's nodes separated by commas; empty with REDIS_URL and MONGODB_URI empty selects the embedded backends (AMQP_URL)")
	fs.StringVar(&cfg.RedisURL, "redis-url", env("REDIS_URL", ""), "Redis URL; with master_name=NAME in its query, the URL's host and its addr=HOST:PORT parameters are Redis Sentinels, and errand follows the primary they name (REDIS_URL)")
	fs.StringVar(&cfg.MongoURI, "mongodb-uri", env("MONGODB_URI", ""), "MongoDB URI (MONGODB_URI)")
	fs.StringVar(&cfg.MongoDatabase, "mongodb-database", env("MONGODB_DATABASE", "myapp"), "MongoDB database (MONGODB_DATABASE)")
	fs.IntVar(&cfg.Workers, "workers", envInt("WORKERS", 32), "worker goroutines (WORKERS)")
	fs.DurationVar(&cfg.HeavyTaskDelay, "heavy-task-delay", envDuration("HEAVY_TASK_DELAY", 500*time.Millisecond), "per-iteration delay of process_heavy_task (HEAVY_TASK_DELAY)")
	fs.DurationVar(&cfg.EmailStepDelay, "email-step-delay", envDuration("EMAIL_STEP_DELAY", 2*time.Second), "per-step delay of send_welcome_email (EMAIL_STEP_DELAY)")
	fs.StringVar(&cfg.QueueName, "queue", env("QUEUE_NAME", "errand.tasks"), "work queue name (QUEUE_NAME)")
	fs.StringVar(&cfg.QueueType, "queue-type", env("QUEUE_TYPE", queueClassic), "RabbitMQ queue type: classic (honours priorities) or quorum (replicated, faster confirms, no priorities on RabbitMQ 3.x) (QUEUE_TYPE)")
	fs.StringVar(&cfg.KeyPrefix, "redis-key-prefix", env("REDIS_KEY_PREFIX", "errand:"), "prefix of every Redis key (REDIS_KEY_PREFIX)")
	fs.DurationVar(&cfg.ResultTTL, "result-ttl", envDuration("RESULT_TTL", 24*time.Hour), "how long a final status stays in Redis; MongoDB keeps it after (RESULT_TTL)")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", envDuration("DRAIN_TIMEOUT", 30*time.Second), "how long shutdown waits for in-flight tasks before requeueing them (DRAIN_TIMEOUT)")
	fs.Int64Var(&cfg.MaxBodyBytes, "max-body-bytes", int64(envInt("MAX_BODY_BYTES", 1<<20)), "largest accepted request body (MAX_BODY_BYTES)")
	fs.Int64Var(&cfg.FileMaxBytes, "file-max-bytes", int64(envInt("FILE_MAX_BYTES", 32<<20)), "largest accepted file upload (FILE_MAX_BYTES)")
	fs.StringVar(&cfg.FetchAllowHosts, "fetch-allow-hosts", env("FETCH_ALLOW_HOSTS", ""), "hosts (or host:port) that tasks may fetch URLs from although they are loopback, private or link-local, separated by commas (FETCH_ALLOW_HOSTS)")
	fs.DurationVar(&cfg.FetchTimeout, "fetch-timeout", envDuration("FETCH_TIMEOUT", 30*time.Second), "time limit of one URL fetch by a task, its body included (FETCH_TIMEOUT)")
	fs.StringVar(&cfg.WebhookSecret, "webhook-secret", env("WEBHOOK_SECRET", ""), "secret that signs webhooks (per API key, a secret derived from it); empty turns callback_url off (WEBHOOK_SECRET)")
	fs.StringVar(&cfg.WebhookAllowHosts, "webhook-allow-hosts", env("WEBHOOK_ALLOW_HOSTS", ""), "hosts (or host:port) that webhooks may call although they are loopback, private or link-local, separated by commas (WEBHOOK_ALLOW_HOSTS)")
	fs.DurationVar(&cfg.WebhookTimeout, "webhook-timeout", envDuration("WEBHOOK_TIMEOUT", 10*time.Second), "time limit of one webhook delivery attempt (WEBHOOK_TIMEOUT)")
	fs.StringVar(&cfg.TaskRateLimits, "task-rate-limits", env("TASK_RATE_LIMITS", ""), "rate limits of task types across every worker, type=rate separated by commas, such as process_image=10/s,import_csv_data=2/m (TASK_RATE_LIMITS)")
	fs.StringVar(&cfg.MaxRunningPerKey, "max-running-per-key", env("MAX_RUNNING_PER_KEY", ""), "how many tasks with the same concurrency_key run at once across every worker: a default, and type=number pairs, such as 4,process_image=1; 0 or empty is no limit (MAX_RUNNING_PER_KEY)")
	fs.DurationVar(&cfg.KeySlotLease, "key-slot-lease", envDuration("KEY_SLOT_LEASE", 30*time.Second), "how long the concurrency key slot of a worker that died stays taken; running tasks renew theirs every third of it (KEY_SLOT_LEASE)")
	fs.IntVar(&cfg.ImageMaxPixels, "image-max-pixels", envInt("IMAGE_MAX_PIXELS", tasks.DefaultImageMaxPixels), "largest image, in pixels, that process_image decodes (IMAGE_MAX_PIXELS)")
	fs.DurationVar(&cfg.PublishTimeout, "publish-timeout", envDuration("PUBLISH_TIMEOUT", 5*time.Second), "how long a submit waits for the broker's confirm before answering 503 (PUBLISH_TIMEOUT)")
	fs.DurationVar(&cfg.HealthTimeout, "health-timeout", envDuration("HEALTH_TIMEOUT", 2*time.Second), "per-dependency deadline of GET /health (HEALTH_TIMEOUT)")
	fs.StringVar(&cfg.SMTPAddr, "smtp-addr", env("SMTP_ADDR", ""), "SMTP server host:port for send_welcome_email; empty logs the mail instead (SMTP_ADDR)")
	fs.StringVar(&cfg.SMTPFrom, "smtp-from", env("SMTP_FROM", "errand@localhost"), "sender address of the welcome email (SMTP_FROM)")
	fs.StringVar(&cfg.SMTPUsername, "smtp-username", env("SMTP_USERNAME", ""), "SMTP PLAIN auth user; empty sends without auth (SMTP_USERNAME)")
	cfg.SMTPPassword = getenv("SMTP_PASSWORD") // a secret: environment only, never a flag or a log line
	cfg.APIKeys = getenv("API_KEYS")           // secrets too
	fs.Float64Var(&cfg.RateLimit, "rate-limit", envFloat("RATE_LIMIT", 0), "requests per second each client may make to /api, 0 for no limit (RATE_LIMIT)")
	fs.IntVar(&cfg.RateBurst, "rate-burst", envInt("RATE_BURST", 0), "burst above RATE_LIMIT; 0 means twice the rate (RATE_BURST)")
	fs.StringVar(&cfg.PprofAddr, "pprof-addr", env("PPROF_ADDR", ""), "serve Go's /debug/pprof profiles on this separate address, for example 127.0.0.1:6060; empty for none (PPROF_ADDR)")
	fs.DurationVar(&cfg.ScheduleHorizon, "schedule-horizon", envDuration("SCHEDULE_HORIZON", 30*24*time.Hour), "how far ahead a task may be scheduled with countdown or eta (SCHEDULE_HORIZON)")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", envDuration("SHUTDOWN_TIMEOUT", 10*time.Second), "how long shutdown waits for open HTTP requests (SHUTDOWN_TIMEOUT)")
	if len(errs) > 0 {
		return config{}, errors.Join(errs...)
	}
	if err := fs.Parse(args[1:]); err != nil {
		return config{}, fmt.Errorf("parse flags: %w", err)
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected argument %q: errand takes flags only", fs.Arg(0))
	}
	return cfg, cfg.validate()
}

func (c config) validate() error {
	var errs []error
	switch c.Role {
	case roleAll, roleAPI, roleWorker:
	default:
		errs = append(errs, fmt.Errorf("ROLE=%q: want all, api or worker", c.Role))
	}
	if !c.embedded() {
		for name, v := range map[string]string{"AMQP_URL": c.AMQPURL, "REDIS_URL": c.RedisURL, "MONGODB_URI": c.MongoURI} {
			if v == "" {
				errs = append(errs, fmt.Errorf("%s is empty: set all of AMQP_URL, REDIS_URL and MONGODB_URI, or none for the embedded backends", name))
			}
		}
	} else if c.Role != roleAll {
		errs = append(errs, fmt.Errorf("ROLE=%s needs AMQP_URL, REDIS_URL and MONGODB_URI: the embedded backends live inside one process", c.Role))
	}
	for _, u := range splitList(c.AMQPURL) {
		if _, err := amqp.ParseURI(u); err != nil {
			errs = append(errs, fmt.Errorf("AMQP_URL %s: %w", redactURL(u), err))
		}
	}
	if c.Workers < 1 || c.Workers > 10000 {
		errs = append(errs, fmt.Errorf("WORKERS=%d: want 1 to 10000", c.Workers))
	}
	for name, d := range map[string]time.Duration{"HEAVY_TASK_DELAY": c.HeavyTaskDelay, "EMAIL_STEP_DELAY": c.EmailStepDelay} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s=%s: must not be negative", name, d))
		}
	}
	for name, d := range map[string]time.Duration{"RESULT_TTL": c.ResultTTL, "DRAIN_TIMEOUT": c.DrainTimeout, "PUBLISH_TIMEOUT": c.PublishTimeout, "FETCH_TIMEOUT": c.FetchTimeout, "WEBHOOK_TIMEOUT": c.WebhookTimeout, "KEY_SLOT_LEASE": c.KeySlotLease, "HEALTH_TIMEOUT": c.HealthTimeout, "SHUTDOWN_TIMEOUT": c.ShutdownTimeout, "SCHEDULE_HORIZON": c.ScheduleHorizon} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s=%s: must be positive", name, d))
		}
	}
	if c.MaxBodyBytes < 1024 {
		errs = append(errs, fmt.Errorf("MAX_BODY_BYTES=%d: want at least 1024", c.MaxBodyBytes))
	}
	if c.FileMaxBytes < 1024 {
		errs = append(errs, fmt.Errorf("FILE_MAX_BYTES=%d: want at least 1024", c.FileMaxBytes))
	}
	if c.ImageMaxPixels < 1 {
		errs = append(errs, fmt.Errorf("IMAGE_MAX_PIXELS=%d: must be positive", c.ImageMaxPixels))
	}
	if c.RateLimit < 0 || c.RateBurst < 0 {
		errs = append(errs, fmt.Errorf("RATE_LIMIT=%g, RATE_BURST=%d: must not be negative", c.RateLimit, c.RateBurst))
	}
	if c.QueueType != queueClassic && c.QueueType != queueQuorum {
		errs = append(errs, fmt.Errorf("QUEUE_TYPE=%q: want classic or quorum", c.QueueType))
	}
	if _, err := parseTaskRates(c.TaskRateLimits); err != nil {
		errs = append(errs, err)
	}
	if _, _, err := parseKeyLimits(c.MaxRunningPerKey); err != nil {
		errs = append(errs, err)
	}
	if c.QueueName == "" {
		errs = append(errs, errors.New("QUEUE_NAME is empty"))
	}
	return errors.Join(errs...)
}

// webhooks is the webhook settings.
func (c config) webhooks() webhookConfig {
	return webhookConfig{secret: c.WebhookSecret, allowHosts: splitList(c.WebhookAllowHosts), timeout: c.WebhookTimeout}
}

// logAttrs is the configuration as log attributes, with passwords removed
// from the service URLs.
func (c config) logAttrs() []any {
	return []any{
		"addr", c.Addr, "role", c.Role, "embedded", c.embedded(),
		"amqp_url", redactURLs(c.AMQPURL), "redis_url", redactURL(c.RedisURL),
		"mongodb_uri", redactURL(c.MongoURI), "mongodb_database", c.MongoDatabase,
		"workers", c.Workers, "queue", c.QueueName, "queue_type", c.QueueType, "redis_key_prefix", c.KeyPrefix,
		"heavy_task_delay", c.HeavyTaskDelay.String(), "email_step_delay", c.EmailStepDelay.String(),
		"result_ttl", c.ResultTTL.String(), "drain_timeout", c.DrainTimeout.String(),
		"publish_timeout", c.PublishTimeout.String(), "max_body_bytes", c.MaxBodyBytes, "file_max_bytes", c.FileMaxBytes,
		"fetch_allow_hosts", c.FetchAllowHosts, "fetch_timeout", c.FetchTimeout.String(), "image_max_pixels", c.ImageMaxPixels,
		"webhooks", c.WebhookSecret != "", "webhook_allow_hosts", c.WebhookAllowHosts, "webhook_timeout", c.WebhookTimeout.String(),
		"task_rate_limits", c.TaskRateLimits, "max_running_per_key", c.MaxRunningPerKey, "key_slot_lease", c.KeySlotLease.String(),
		"smtp_addr", c.SMTPAddr, "smtp_from", c.SMTPFrom, "smtp_auth", c.SMTPUsername != "",
		"api_keys", len(newAPIKeys(c.APIKeys).digests), "rate_limit", c.RateLimit, "rate_burst", c.RateBurst,
		"pprof_addr", c.PprofAddr, "schedule_horizon", c.ScheduleHorizon.String(),
	}
}

// redactURLs redacts each URL of a comma-separated list.
func redactURLs(list string) string {
	urls := splitList(list)
	for i, u := range urls {
		urls[i] = redactURL(u)
	}
	return strings.Join(urls, ",")
}

func redactURL(raw string) string {
	if raw == "" {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable)"
	}
	return u.Redacted()
}

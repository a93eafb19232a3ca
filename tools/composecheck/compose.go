package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// healthcheckExempt lists the services whose image truly cannot run a
// health check, each with the reason. Every other service must have one.
// It is empty today: every image in docker-compose.yml has a probe (wget,
// redis-cli, mongosh, rabbitmq-diagnostics, mailpit readyz, errand
// healthcheck). grafana/tempo from 2.9 on would belong here: its distroless
// image has no shell, wget or curl, and tempo has no healthcheck command.
var healthcheckExempt = map[string]string{}

// dockerDefaultStopGrace is how long Docker waits between SIGTERM and
// SIGKILL when a service sets no stop_grace_period.
const dockerDefaultStopGrace = 10 * time.Second

// checkConfig says what to check and against what.
type checkConfig struct {
	composeFile       string
	envFile           string
	sourceDir         string // errand's Go source (the repository root)
	prometheusFile    string // checked when the file exists
	nginxFile         string // "" skips the nginx checks
	errandEnv         []string
	healthcheckExempt map[string]string
}

// report is the outcome of check: the problems found, one line each.
type report struct {
	services       int
	errandServices int
	checked        []string
	problems       []string
}

// check loads the compose file and runs every check on it. It returns an
// error only when something cannot be read or parsed; what it finds wrong
// goes into report.problems.
func check(ctx context.Context, cfg checkConfig) (report, error) {
	src, err := readErrandSource(cfg.sourceDir)
	if err != nil {
		return report{}, err
	}
	project, err := loadProject(ctx, cfg.composeFile, cfg.envFile)
	if err != nil {
		return report{}, err
	}
	raw, err := os.ReadFile(cfg.composeFile)
	if err != nil {
		return report{}, fmt.Errorf("read compose file: %w", err)
	}
	composeDir, err := filepath.Abs(filepath.Dir(cfg.composeFile))
	if err != nil {
		return report{}, fmt.Errorf("locate compose file: %w", err)
	}
	errands, err := findErrandServices(project, composeDir, src)
	if err != nil {
		return report{}, err
	}
	scan, err := scanRawCompose(raw)
	if err != nil {
		return report{}, fmt.Errorf("read %s: %w", cfg.composeFile, err)
	}

	rep := report{services: len(project.Services), errandServices: len(errands)}
	add := func(name string, problems []string) {
		rep.checked = append(rep.checked, name)
		rep.problems = append(rep.problems, problems...)
	}
	add("errand-env list", src.crossCheck(cfg.errandEnv))
	add("healthchecks", checkHealthchecks(project, cfg.healthcheckExempt))
	add("depends_on", checkDependsOn(project, cfg.healthcheckExempt))
	add("errand env", checkErrandEnv(errands, cfg.errandEnv))
	add("paths", checkPaths(project))
	grace, err := checkStopGrace(project, errands, src)
	if err != nil {
		return report{}, err
	}
	add("stop_grace_period", grace)
	add("credentials", scan.problems)
	add(filepath.Base(cfg.envFile), checkEnvFile(cfg.envFile, scan.variables))
	if fileExists(cfg.prometheusFile) {
		problems, err := checkPrometheus(cfg.prometheusFile, project, errands)
		if err != nil {
			return report{}, err
		}
		add("prometheus targets", problems)
	}
	if cfg.nginxFile != "" {
		problems, err := checkNginx(cfg.nginxFile, errands, src)
		if err != nil {
			return report{}, err
		}
		add("nginx", problems)
	}
	return rep, nil
}

// loadProject loads composeFile as `docker compose` would with envFile as
// its .env, every profile enabled, and paths resolved against the compose
// file's directory. The process environment is left out, so the result
// depends on the files alone.
func loadProject(ctx context.Context, composeFile, envFile string) (*types.Project, error) {
	if envFile == "" {
		return nil, errors.New("no env file: compose-go would fall back to a real .env")
	}
	opts, err := cli.NewProjectOptions([]string{composeFile},
		cli.WithWorkingDirectory(filepath.Dir(composeFile)),
		cli.WithEnvFiles(envFile),
		cli.WithDotEnv,
		cli.WithProfiles([]string{"*"}),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		return nil, fmt.Errorf("load %s with %s: %w", composeFile, envFile, err)
	}
	project, err := opts.LoadProject(ctx)
	if err != nil {
		return nil, fmt.Errorf("load %s with %s: %w", composeFile, envFile, err)
	}
	return project, nil
}

// errandService is a service that runs errand, with the settings errand
// will use: its environment, or errand's defaults where that is silent.
type errandService struct {
	name string
	env  map[string]string
	role string
	port string // the port of ADDR
}

func (e errandService) servesAPI() bool { return e.role == "api" || e.role == "all" }

// findErrandServices picks the services built from the repository root,
// where errand's Dockerfile is.
func findErrandServices(p *types.Project, composeDir string, src errandSource) ([]errandService, error) {
	defaultRole, err := src.defaultString("ROLE")
	if err != nil {
		return nil, err
	}
	defaultAddr, err := src.defaultString("ADDR")
	if err != nil {
		return nil, err
	}
	var out []errandService
	for _, name := range sortedKeys(p.Services) {
		svc := p.Services[name]
		if svc.Build == nil || filepath.Clean(svc.Build.Context) != composeDir {
			continue
		}
		e := errandService{name: name, env: map[string]string{}}
		for k, v := range svc.Environment {
			if v != nil {
				e.env[k] = *v
			}
		}
		e.role = e.setting("ROLE", defaultRole)
		addr := e.setting("ADDR", defaultAddr)
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("service %s: ADDR=%q: %w", name, addr, err)
		}
		e.port = port
		out = append(out, e)
	}
	return out, nil
}

// setting is what errand reads for name: the value set, or def when it is
// unset or empty (errand treats both alike).
func (e errandService) setting(name, def string) string {
	if v := e.env[name]; v != "" {
		return v
	}
	return def
}

func checkHealthchecks(p *types.Project, exempt map[string]string) []string {
	var problems []string
	for _, name := range sortedKeys(p.Services) {
		if _, ok := exempt[name]; ok {
			continue
		}
		hc := p.Services[name].HealthCheck
		switch {
		case hc == nil:
			problems = append(problems, fmt.Sprintf("healthcheck: service %s has none: add one, or list it in healthcheckExempt (tools/composecheck/compose.go) with the reason its image cannot run one", name))
		case hc.Disable || len(hc.Test) == 0 || hc.Test[0] == "NONE":
			problems = append(problems, fmt.Sprintf("healthcheck: service %s disables its healthcheck", name))
		}
	}
	for _, name := range sortedKeys(exempt) {
		if _, ok := p.Services[name]; !ok {
			problems = append(problems, fmt.Sprintf("healthcheck: healthcheckExempt lists %s, which is no service: remove it", name))
		}
	}
	return problems
}

func checkDependsOn(p *types.Project, exempt map[string]string) []string {
	var problems []string
	for _, name := range sortedKeys(p.Services) {
		deps := p.Services[name].DependsOn
		for _, dep := range sortedKeys(deps) {
			if cond := deps[dep].Condition; cond != types.ServiceConditionHealthy {
				problems = append(problems, fmt.Sprintf("depends_on: %s waits for %s with condition %s; want condition: service_healthy", name, dep, cond))
			}
			target, ok := p.Services[dep]
			if !ok {
				continue // compose-go's own consistency check reports unknown services
			}
			if reason, ok := exempt[dep]; ok {
				problems = append(problems, fmt.Sprintf("depends_on: %s waits for %s to be healthy, but %s has no healthcheck (%s)", name, dep, dep, reason))
			} else if target.HealthCheck == nil || target.HealthCheck.Disable {
				problems = append(problems, fmt.Sprintf("depends_on: %s waits for %s to be healthy, but %s has no healthcheck", name, dep, dep))
			}
		}
	}
	return problems
}

func checkErrandEnv(errands []errandService, known []string) []string {
	var problems []string
	for _, e := range errands {
		for _, name := range sortedKeys(e.env) {
			if slices.Contains(known, name) {
				continue
			}
			msg := fmt.Sprintf("errand env: %s sets %s, which errand does not read", e.name, name)
			if near := nearestName(name, known); near != "" {
				msg += fmt.Sprintf(" (did you mean %s?)", near)
			}
			problems = append(problems, msg)
		}
		switch e.role {
		case "all", "api", "worker":
		default:
			problems = append(problems, fmt.Sprintf("errand env: %s sets ROLE=%s; want all, api or worker", e.name, e.role))
		}
	}
	return problems
}

// nearestName is the known name within two edits of name, if any.
func nearestName(name string, known []string) string {
	best, bestDist := "", 3
	for _, k := range known {
		if d := editDistance(name, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// checkPaths checks the host paths the file refers to. A missing bind
// source is the dangerous one: Docker creates it as an empty directory
// and the service starts with no configuration.
func checkPaths(p *types.Project) []string {
	var problems []string
	for _, name := range sortedKeys(p.Services) {
		svc := p.Services[name]
		for _, v := range svc.Volumes {
			if v.Type == types.VolumeTypeBind && !fileExists(v.Source) {
				problems = append(problems, fmt.Sprintf("paths: %s mounts %s at %s, but it does not exist", name, v.Source, v.Target))
			}
		}
		if b := svc.Build; b != nil {
			if !fileExists(b.Context) {
				problems = append(problems, fmt.Sprintf("paths: %s builds from %s, which does not exist", name, b.Context))
			} else if b.DockerfileInline == "" {
				dockerfile := b.Dockerfile
				if dockerfile == "" {
					dockerfile = "Dockerfile"
				}
				if !filepath.IsAbs(dockerfile) {
					dockerfile = filepath.Join(b.Context, dockerfile)
				}
				if !fileExists(dockerfile) {
					problems = append(problems, fmt.Sprintf("paths: %s builds with %s, which does not exist", name, dockerfile))
				}
			}
		}
	}
	for _, name := range sortedKeys(p.Configs) {
		if f := p.Configs[name].File; f != "" && !fileExists(f) {
			problems = append(problems, fmt.Sprintf("paths: config %s is read from %s, which does not exist", name, f))
		}
	}
	for _, name := range sortedKeys(p.Secrets) {
		if f := p.Secrets[name].File; f != "" && !fileExists(f) {
			problems = append(problems, fmt.Sprintf("paths: secret %s is read from %s, which does not exist", name, f))
		}
	}
	return problems
}

// checkStopGrace checks that Docker waits long enough after SIGTERM for
// errand to finish: open requests for SHUTDOWN_TIMEOUT and, where workers
// run, in-flight tasks for DRAIN_TIMEOUT (the two run at once), then the
// trace flush.
func checkStopGrace(p *types.Project, errands []errandService, src errandSource) ([]string, error) {
	duration := func(e errandService, name string) (time.Duration, error) {
		if v := e.env[name]; v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				return 0, fmt.Errorf("service %s: %s=%q: %w", e.name, name, v, err)
			}
			return d, nil
		}
		return src.defaultDuration(name)
	}
	var problems []string
	for _, e := range errands {
		shutdown, err := duration(e, "SHUTDOWN_TIMEOUT")
		if err != nil {
			return nil, err
		}
		need, why := shutdown, fmt.Sprintf("SHUTDOWN_TIMEOUT %s", shutdown)
		if e.role != "api" {
			drain, err := duration(e, "DRAIN_TIMEOUT")
			if err != nil {
				return nil, err
			}
			need = max(need, drain)
			why = fmt.Sprintf("DRAIN_TIMEOUT %s, %s", drain, why)
		}
		need += traceFlushTimeout
		grace := dockerDefaultStopGrace
		if g := p.Services[e.name].StopGracePeriod; g != nil {
			grace = time.Duration(*g)
		}
		if grace <= need {
			problems = append(problems, fmt.Sprintf("stop_grace_period: %s gets %s between SIGTERM and SIGKILL, but errand may need %s (%s, then up to %s flushing traces): set stop_grace_period above %s",
				e.name, grace, need, why, traceFlushTimeout, need))
		}
	}
	return problems, nil
}

// servedPorts are the container ports a service listens on, as far as the
// compose file says: ADDR's port for errand, expose and ports otherwise.
func servedPorts(name string, svc types.ServiceConfig, errands []errandService) []string {
	var ports []string
	for _, e := range errands {
		if e.name == name {
			ports = append(ports, e.port)
		}
	}
	for _, x := range svc.Expose {
		ports = append(ports, strings.SplitN(x, "/", 2)[0])
	}
	for _, p := range svc.Ports {
		ports = append(ports, strconv.FormatUint(uint64(p.Target), 10))
	}
	return ports
}

// fileExists reports whether path names an existing file or directory.
func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

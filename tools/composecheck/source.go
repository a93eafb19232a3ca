package main

import (
	"errors"
	"fmt"
	"go/ast"
	"go/constant"
	"go/parser"
	"go/token"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// errandEnvNames are the environment variables errand reads, as docs/configuration.md
// and config.go list them, plus the OpenTelemetry variables tracing.go
// reads. errandSource cross-checks this list against the Go source, so it
// cannot silently fall behind errand.
var errandEnvNames = []string{
	"ADDR", "ROLE",
	"AMQP_URL", "REDIS_URL", "MONGODB_URI", "MONGODB_DATABASE",
	"WORKERS", "HEAVY_TASK_DELAY", "EMAIL_STEP_DELAY",
	"QUEUE_NAME", "QUEUE_TYPE", "REDIS_KEY_PREFIX", "RESULT_TTL",
	"DRAIN_TIMEOUT", "PUBLISH_TIMEOUT", "HEALTH_TIMEOUT", "SHUTDOWN_TIMEOUT", "SCHEDULE_HORIZON", "FILE_MAX_BYTES",
	"FETCH_ALLOW_HOSTS", "FETCH_TIMEOUT", "IMAGE_MAX_PIXELS",
	"WEBHOOK_SECRET", "WEBHOOK_ALLOW_HOSTS", "WEBHOOK_TIMEOUT", "TASK_RATE_LIMITS", "MAX_RUNNING_PER_KEY", "KEY_SLOT_LEASE",
	"MAX_BODY_BYTES", "LOG_LEVEL",
	"SMTP_ADDR", "SMTP_FROM", "SMTP_USERNAME", "SMTP_PASSWORD",
	"API_KEYS", "RATE_LIMIT", "RATE_BURST", "PPROF_ADDR", "GOGC",
	"OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SERVICE_NAME",
}

// envReaders are the functions errand reads a variable through: the
// getenv it is handed, and config.go's env helpers, whose second argument
// is the default.
var envReaders = map[string]bool{"getenv": true, "env": true, "envInt": true, "envFloat": true, "envDuration": true}

// otelName matches the OpenTelemetry variables tracing.go lists by name
// (otelConfigured) rather than reading through a helper.
var otelName = regexp.MustCompile(`^OTEL_[A-Z0-9_]+$`)

// traceFlushTimeout is how long run.go gives the tracer to flush after
// everything else has shut down.
const traceFlushTimeout = 5 * time.Second

// errandSource is what composecheck learns from errand's Go source: the
// variables it reads and their defaults.
type errandSource struct {
	names    map[string][]string // variable name to the files that read it
	defaults map[string]ast.Expr // variable name to its default expression
	consts   map[string]ast.Expr // package-level constants, for defaults like roleAll
}

// readErrandSource parses the non-test Go files in dir (errand is a flat
// package main). config.go must be among them and must read variables:
// that guards against a refactor that would leave nothing to cross-check.
func readErrandSource(dir string) (errandSource, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return errandSource{}, fmt.Errorf("list errand's source: %w", err)
	}
	src := errandSource{names: map[string][]string{}, defaults: map[string]ast.Expr{}, consts: map[string]ast.Expr{}}
	fset := token.NewFileSet()
	sawConfig := false
	for _, path := range files {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return errandSource{}, fmt.Errorf("parse errand's source: %w", err)
		}
		base := filepath.Base(path)
		reads := src.collect(f, base)
		if base == "config.go" {
			sawConfig = true
			if reads == 0 {
				return errandSource{}, fmt.Errorf("%s reads no environment variable through %s: has errand's configuration moved?", path, strings.Join(sortedKeys(envReaders), ", "))
			}
		}
	}
	if !sawConfig {
		return errandSource{}, fmt.Errorf("no config.go in %s: is -root errand's repository?", dir)
	}
	return src, nil
}

// collect records the variables f reads and the package constants it
// declares, and returns how many reads it found.
func (s errandSource) collect(f *ast.File, file string) int {
	reads := 0
	for _, decl := range f.Decls {
		if gd, ok := decl.(*ast.GenDecl); ok && gd.Tok == token.CONST {
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if i < len(vs.Values) {
						s.consts[name.Name] = vs.Values[i]
					}
				}
			}
		}
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.CallExpr:
			fn, ok := n.Fun.(*ast.Ident)
			if !ok || !envReaders[fn.Name] || len(n.Args) == 0 {
				return true
			}
			if name, ok := stringLit(n.Args[0]); ok {
				s.add(name, file)
				reads++
				if len(n.Args) >= 2 {
					s.defaults[name] = n.Args[1]
				}
			}
		case *ast.BasicLit:
			if name, ok := stringLit(n); ok && otelName.MatchString(name) {
				s.add(name, file)
				reads++
			}
		}
		return true
	})
	return reads
}

func (s errandSource) add(name, file string) {
	if !slices.Contains(s.names[name], file) {
		s.names[name] = append(s.names[name], file)
	}
}

// crossCheck compares the list composecheck was given with the names the
// source reads, both ways.
func (s errandSource) crossCheck(known []string) []string {
	var problems []string
	for _, name := range known {
		if _, ok := s.names[name]; !ok {
			problems = append(problems, fmt.Sprintf("errand-env: %s is in composecheck's list but errand's source no longer reads it: remove it from errandEnvNames (tools/composecheck/source.go)", name))
		}
	}
	for _, name := range sortedKeys(s.names) {
		if !slices.Contains(known, name) {
			problems = append(problems, fmt.Sprintf("errand-env: errand reads %s (%s) but composecheck's list lacks it: add it to errandEnvNames (tools/composecheck/source.go)", name, strings.Join(s.names[name], ", ")))
		}
	}
	return problems
}

// defaultString is name's default as a string ("" when it has none).
func (s errandSource) defaultString(name string) (string, error) {
	v, err := s.defaultValue(name)
	if err != nil || v == nil {
		return "", err
	}
	if v.Kind() != constant.String {
		return "", fmt.Errorf("default of %s is %s, not a string", name, v)
	}
	return constant.StringVal(v), nil
}

// defaultInt is name's default as an integer.
func (s errandSource) defaultInt(name string) (int64, error) {
	v, err := s.defaultValue(name)
	if err != nil {
		return 0, err
	}
	if v == nil {
		return 0, fmt.Errorf("%s has no default in errand's source", name)
	}
	n, ok := constant.Int64Val(constant.ToInt(v))
	if !ok {
		return 0, fmt.Errorf("default of %s is %s, not an integer", name, v)
	}
	return n, nil
}

// defaultDuration is name's default as a duration.
func (s errandSource) defaultDuration(name string) (time.Duration, error) {
	n, err := s.defaultInt(name)
	return time.Duration(n), err
}

func (s errandSource) defaultValue(name string) (constant.Value, error) {
	expr, ok := s.defaults[name]
	if !ok {
		return nil, nil
	}
	v, err := s.eval(expr, 0)
	if err != nil {
		return nil, fmt.Errorf("evaluate the default of %s: %w", name, err)
	}
	return v, nil
}

// timeUnits are the time package's duration constants, in nanoseconds.
var timeUnits = map[string]int64{
	"Nanosecond": int64(time.Nanosecond), "Microsecond": int64(time.Microsecond), "Millisecond": int64(time.Millisecond),
	"Second": int64(time.Second), "Minute": int64(time.Minute), "Hour": int64(time.Hour),
}

// eval evaluates the constant expressions errand's defaults are written
// in: literals, package constants, arithmetic and shifts, time units and
// conversions such as int64(…).
func (s errandSource) eval(e ast.Expr, depth int) (constant.Value, error) {
	if depth > 20 {
		return nil, errors.New("constant expression too deep")
	}
	switch e := e.(type) {
	case *ast.BasicLit:
		v := constant.MakeFromLiteral(e.Value, e.Kind, 0)
		if v.Kind() == constant.Unknown {
			return nil, fmt.Errorf("bad literal %s", e.Value)
		}
		return v, nil
	case *ast.ParenExpr:
		return s.eval(e.X, depth+1)
	case *ast.Ident:
		if c, ok := s.consts[e.Name]; ok {
			return s.eval(c, depth+1)
		}
		return nil, fmt.Errorf("unknown identifier %s", e.Name)
	case *ast.SelectorExpr:
		if pkg, ok := e.X.(*ast.Ident); ok && pkg.Name == "time" {
			if ns, ok := timeUnits[e.Sel.Name]; ok {
				return constant.MakeInt64(ns), nil
			}
		}
		return nil, fmt.Errorf("unsupported selector .%s", e.Sel.Name)
	case *ast.UnaryExpr:
		x, err := s.eval(e.X, depth+1)
		if err != nil {
			return nil, err
		}
		return constant.UnaryOp(e.Op, x, 0), nil
	case *ast.BinaryExpr:
		x, err := s.eval(e.X, depth+1)
		if err != nil {
			return nil, err
		}
		y, err := s.eval(e.Y, depth+1)
		if err != nil {
			return nil, err
		}
		switch e.Op {
		case token.SHL, token.SHR:
			n, ok := constant.Uint64Val(y)
			if !ok {
				return nil, errors.New("bad shift count")
			}
			return constant.Shift(x, e.Op, uint(n)), nil
		case token.QUO:
			if constant.Sign(y) == 0 {
				return nil, errors.New("division by zero")
			}
			if x.Kind() == constant.Int && y.Kind() == constant.Int {
				return constant.BinaryOp(x, token.QUO_ASSIGN, y), nil // integer division
			}
		}
		return constant.BinaryOp(x, e.Op, y), nil
	case *ast.CallExpr:
		// A conversion such as int64(1<<20) or time.Duration(5).
		if len(e.Args) == 1 {
			return s.eval(e.Args[0], depth+1)
		}
	}
	return nil, fmt.Errorf("unsupported expression %T", e)
}

func stringLit(e ast.Expr) (string, bool) {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

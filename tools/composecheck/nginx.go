package main

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

var (
	nginxBodySize   = regexp.MustCompile(`\bclient_max_body_size\s+([0-9]+)([kKmMgG]?)\s*;`)
	nginxUpstream   = regexp.MustCompile(`\bupstream\s+(\S+)\s*\{([^}]*)\}`)
	nginxServer     = regexp.MustCompile(`(?m)^\s*server\s+([^\s;]+)`)
	nginxLocationRE = regexp.MustCompile(`\blocation\s+(?:(=|\^~|~\*|~)\s*)?("[^"]*"|[^\s{]+)\s*\{([^}]*)\}`)
	nginxProxy      = regexp.MustCompile(`\bproxy_pass\s+http://([^/;\s]+)`)
)

// nginxDefaultBodySize is client_max_body_size when nginx.conf does not
// set it.
const nginxDefaultBodySize = 1 << 20

// checkNginx checks nginx.conf against the errand API services: the body
// limit equals errand's MAX_BODY_BYTES (and, for /api/files, takes a file
// of FILE_MAX_BYTES in its multipart envelope), the upstreams list exactly
// the API services on their ports, /health and /api/ reach them, and
// /metrics does not.
func checkNginx(path string, errands []errandService, src errandSource) ([]string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return []string{fmt.Sprintf("nginx: %v", err)}, nil
	}
	conf := stripNginxComments(string(raw))
	var apis []errandService
	for _, e := range errands {
		if e.servesAPI() {
			apis = append(apis, e)
		}
	}
	var problems []string

	// The body limits: the files location's apart, every other one.
	limits, err := apiLimits(apis, src, "MAX_BODY_BYTES")
	if err != nil {
		return nil, err
	}
	fileLimits, err := apiLimits(apis, src, "FILE_MAX_BYTES")
	if err != nil {
		return nil, err
	}
	for name, l := range map[string]map[int64][]string{"MAX_BODY_BYTES": limits, "FILE_MAX_BYTES": fileLimits} {
		if len(l) > 1 {
			problems = append(problems, fmt.Sprintf("nginx: the API services disagree on %s: %v", name, l))
		}
	}
	locations := parseNginxLocations(conf)
	rest := conf
	if files, ok := matchNginxLocation(locations, "/api/files"); ok && nginxBodySize.MatchString(files.body) {
		rest = strings.Replace(conf, files.body, "", 1)
		size := nginxSize(nginxBodySize.FindStringSubmatch(files.body))
		for limit, names := range fileLimits {
			if size < limit+multipartOverhead || size > limit+maxFileSlack {
				problems = append(problems, fmt.Sprintf("nginx: client_max_body_size of location %s is %d bytes, but errand's FILE_MAX_BYTES is %d on %s: allow the file and its multipart envelope (64 KiB to 1 MiB more), so that nginx neither refuses what errand would take nor takes far more",
					files.path, size, limit, strings.Join(names, ", ")))
			}
		}
	} else if _, ok := matchNginxLocation(locations, "/api/files"); ok {
		problems = append(problems, "nginx: /api/files has no client_max_body_size of its own, so uploads are held to the JSON body limit; give its location one that takes FILE_MAX_BYTES")
	}
	sizes := nginxBodySize.FindAllStringSubmatch(rest, -1)
	if len(sizes) == 0 {
		sizes = [][]string{{"", strconv.Itoa(nginxDefaultBodySize), ""}}
	}
	for _, m := range sizes {
		size := nginxSize(m)
		for limit, names := range limits {
			if size != limit {
				problems = append(problems, fmt.Sprintf("nginx: client_max_body_size is %d bytes, but errand's MAX_BODY_BYTES is %d on %s: make them equal, or errand answers 413 for bodies nginx let through (or nginx refuses what errand would take)",
					size, limit, strings.Join(names, ", ")))
			}
		}
	}

	// The upstreams: every API service on its port, and nothing else.
	upstreams := map[string]bool{}
	var servers []string
	for _, m := range nginxUpstream.FindAllStringSubmatch(conf, -1) {
		upstreams[m[1]] = true
		for _, s := range nginxServer.FindAllStringSubmatch(m[2], -1) {
			servers = append(servers, s[1])
		}
	}
	for _, s := range servers {
		ok := slices.ContainsFunc(apis, func(e errandService) bool { return s == e.name+":"+e.port })
		if !ok {
			problems = append(problems, fmt.Sprintf("nginx: upstream server %s is no errand API service on its ADDR port (API services: %s)", s, apiAddrs(apis)))
		}
	}
	for _, e := range apis {
		if !slices.Contains(servers, e.name+":"+e.port) {
			problems = append(problems, fmt.Sprintf("nginx: errand API service %s is missing from the upstream: add server %s:%s", e.name, e.name, e.port))
		}
	}

	// Which location serves what.
	for _, path := range []string{"/health", "/api/items", "/api/files"} {
		loc, ok := matchNginxLocation(locations, path)
		proxied := ok && nginxProxy.MatchString(loc.body)
		if !proxied || !upstreams[nginxProxy.FindStringSubmatch(loc.body)[1]] {
			problems = append(problems, fmt.Sprintf("nginx: %s is not proxied to an upstream of errand's API", path))
		}
	}
	if loc, ok := matchNginxLocation(locations, "/metrics"); ok && nginxProxy.MatchString(loc.body) {
		problems = append(problems, fmt.Sprintf("nginx: /metrics is proxied by location %s: metrics must not be public (Prometheus scrapes the instances directly); add location = /metrics { return 404; }", strings.TrimSpace(loc.modifier+" "+loc.path)))
	}
	return problems, nil
}

// multipartOverhead is what errand lets a multipart upload carry beyond
// its file (file_routes.go), and maxFileSlack how much more than the file
// nginx may let through.
const (
	multipartOverhead = 64 << 10
	maxFileSlack      = 1 << 20
)

// apiLimits groups the API services by their value of the size setting
// name.
func apiLimits(apis []errandService, src errandSource, name string) (map[int64][]string, error) {
	defaultMax, err := src.defaultInt(name)
	if err != nil {
		return nil, err
	}
	limits := map[int64][]string{}
	for _, e := range apis {
		limit := defaultMax
		if v := e.env[name]; v != "" {
			if limit, err = strconv.ParseInt(v, 10, 64); err != nil {
				return nil, fmt.Errorf("service %s: %s=%q: %w", e.name, name, v, err)
			}
		}
		limits[limit] = append(limits[limit], e.name)
	}
	return limits, nil
}

// nginxSize is the bytes of a client_max_body_size match.
func nginxSize(m []string) int64 {
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return n << map[string]int{"": 0, "k": 10, "m": 20, "g": 30}[strings.ToLower(m[2])]
}

func apiAddrs(apis []errandService) string {
	var out []string
	for _, e := range apis {
		out = append(out, e.name+":"+e.port)
	}
	return strings.Join(out, ", ")
}

// stripNginxComments removes # comments, leaving # inside quotes alone.
func stripNginxComments(conf string) string {
	var b strings.Builder
	for _, line := range strings.Split(conf, "\n") {
		var quote rune
		cut := len(line)
	scan:
		for i, r := range line {
			switch {
			case quote != 0 && r == quote:
				quote = 0
			case quote == 0 && (r == '"' || r == '\''):
				quote = r
			case quote == 0 && r == '#':
				cut = i
				break scan
			}
		}
		b.WriteString(line[:cut])
		b.WriteByte('\n')
	}
	return b.String()
}

type nginxLocation struct {
	modifier, path, body string
}

func parseNginxLocations(conf string) []nginxLocation {
	var locs []nginxLocation
	for _, m := range nginxLocationRE.FindAllStringSubmatch(conf, -1) {
		locs = append(locs, nginxLocation{modifier: m[1], path: strings.Trim(m[2], `"`), body: m[3]})
	}
	return locs
}

// matchNginxLocation picks the location nginx would use for path: an exact
// match; else the longest prefix if it is ^~; else the first matching
// regular expression; else the longest prefix. (Named locations and
// nested ones are out of scope.)
func matchNginxLocation(locs []nginxLocation, path string) (nginxLocation, bool) {
	var longest nginxLocation
	found := false
	for _, l := range locs {
		switch l.modifier {
		case "=":
			if l.path == path {
				return l, true
			}
		case "", "^~":
			if strings.HasPrefix(l.path, "@") {
				continue
			}
			if strings.HasPrefix(path, l.path) && (!found || len(l.path) > len(longest.path)) {
				longest, found = l, true
			}
		}
	}
	if found && longest.modifier == "^~" {
		return longest, true
	}
	for _, l := range locs {
		if l.modifier != "~" && l.modifier != "~*" {
			continue
		}
		expr := l.path
		if l.modifier == "~*" {
			expr = "(?i)" + expr
		}
		if re, err := regexp.Compile(expr); err == nil && re.MatchString(path) {
			return l, true
		}
	}
	return longest, found
}

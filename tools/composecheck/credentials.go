package main

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v4"
)

// secretKey matches names that hold a credential: an environment variable
// or mapping key ending in PASSWORD, PASS, SECRET, TOKEN, COOKIE, AUTH or
// API_KEY(S). (Names that merely contain one, like GF_AUTH_ANONYMOUS_ENABLED,
// are settings.)
var secretKey = regexp.MustCompile(`(?i)(^|_)(PASSWORD|PASSWD|PASS|SECRET|TOKEN|COOKIE|AUTH|API_KEYS?)$`)

// secretFlags are command-line flags whose next argument is a credential.
var secretFlags = []string{"--requirepass", "--masterauth", "--password", "--pass", "-a"}

// variableRef matches a compose variable reference: ${NAME}, ${NAME:?msg},
// ${NAME:-default}, ${NAME-default}, ${NAME:+alt} and the rest.
var variableRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}`)

// bareVariableRef matches $NAME without braces.
var bareVariableRef = regexp.MustCompile(`\$([A-Za-z_][A-Za-z0-9_]*)`)

// urlUserinfo matches the user:password@ part of a URL.
var urlUserinfo = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.-]*://([^/@\s]*)@`)

// fromEnv stands in for a value that comes from the environment when a
// string is normalized (see normalizeVariables).
const fromEnv = "\x00"

// rawScan is what scanRawCompose finds in the compose file's YAML.
type rawScan struct {
	problems  []string
	variables map[string]bool // every variable the file interpolates
}

// scanRawCompose reads the compose file as written, before interpolation
// and merging: a literal password matters wherever it is, in an extension
// field or an anchor too. Comments are not looked at.
func scanRawCompose(raw []byte) (rawScan, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(raw, &root); err != nil {
		return rawScan{}, err
	}
	s := rawScan{variables: map[string]bool{}}
	s.walk(&root)
	return s, nil
}

func (s *rawScan) walk(n *yaml.Node) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			s.walk(c)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, value := n.Content[i], n.Content[i+1]
			if value.Kind == yaml.ScalarNode && secretKey.MatchString(key.Value) {
				s.checkSecret(value, key.Value)
			}
			s.walk(value)
		}
	case yaml.SequenceNode:
		for i, item := range n.Content {
			if item.Kind != yaml.ScalarNode {
				s.walk(item)
				continue
			}
			if i > 0 && slices.Contains(secretFlags, n.Content[i-1].Value) {
				s.checkSecret(item, "the argument of "+n.Content[i-1].Value)
			}
			// environment: [NAME=value] list syntax.
			if name, _, ok := strings.Cut(item.Value, "="); ok && secretKey.MatchString(name) && !strings.ContainsAny(name, " $") {
				s.checkSecret(&yaml.Node{Kind: yaml.ScalarNode, Value: strings.TrimPrefix(item.Value, name+"="), Line: item.Line}, name)
			}
			s.walk(item)
		}
	case yaml.ScalarNode:
		s.checkScalar(n)
	}
	// Aliases point at nodes already walked where their anchor is defined.
}

// checkScalar looks at every string: it records the variables it uses,
// and flags guest:guest and URLs with a literal password.
func (s *rawScan) checkScalar(n *yaml.Node) {
	unescaped := strings.ReplaceAll(n.Value, "$$", "")
	for _, m := range variableRef.FindAllStringSubmatch(unescaped, -1) {
		s.variables[m[1]] = true
	}
	for _, m := range bareVariableRef.FindAllStringSubmatch(variableRef.ReplaceAllString(unescaped, ""), -1) {
		s.variables[m[1]] = true
	}
	value := normalizeVariables(n.Value)
	if strings.Contains(strings.ToLower(value), "guest:guest") {
		s.problems = append(s.problems, fmt.Sprintf("credentials: line %d uses RabbitMQ's default guest:guest; take the user and password from .env", n.Line))
	}
	for _, m := range urlUserinfo.FindAllStringSubmatch(value, -1) {
		if _, password, ok := strings.Cut(m[1], ":"); ok && !onlyFromEnv(password) {
			s.problems = append(s.problems, fmt.Sprintf("credentials: line %d has a URL with a literal password; write it as ${VARIABLE} from .env", n.Line))
		}
	}
}

// checkSecret flags a credential that is not taken from the environment.
// The value itself is never printed.
func (s *rawScan) checkSecret(n *yaml.Node, what string) {
	if v := normalizeVariables(n.Value); v != "" && !onlyFromEnv(v) {
		s.problems = append(s.problems, fmt.Sprintf("credentials: line %d: %s is a literal; write it as ${VARIABLE} (without a default) and set the variable in .env", n.Line, what))
	}
}

// normalizeVariables replaces each variable reference with fromEnv, except
// those with a literal fallback (${X:-secret}), which become the literal:
// a default password is a literal password. $$ is an escaped $.
func normalizeVariables(s string) string {
	s = strings.ReplaceAll(s, "$$", "")
	s = variableRef.ReplaceAllStringFunc(s, func(ref string) string {
		m := variableRef.FindStringSubmatch(ref)
		switch op, alt := m[2], m[3]; {
		case (op == "-" || op == ":-" || op == "+" || op == ":+") && alt != "":
			return alt
		default:
			return fromEnv
		}
	})
	return bareVariableRef.ReplaceAllString(s, fromEnv)
}

func onlyFromEnv(s string) bool { return strings.Trim(s, fromEnv) == "" }

// checkEnvFile checks the env file the compose file is loaded with
// (.env.example): it documents every variable the compose file uses and
// nothing else, and its secrets are placeholders.
func checkEnvFile(path string, used map[string]bool) []string {
	defined, err := readEnvFile(path)
	if err != nil {
		return []string{fmt.Sprintf("env file: %v", err)}
	}
	var problems []string
	for _, v := range sortedKeys(used) {
		if _, ok := defined[v]; !ok {
			problems = append(problems, fmt.Sprintf("env file: the compose file uses ${%s}, which %s does not document", v, path))
		}
	}
	for _, v := range sortedKeys(defined) {
		if !used[v] {
			problems = append(problems, fmt.Sprintf("env file: %s sets %s, which the compose file does not use", path, v))
		}
		if value := defined[v]; secretKey.MatchString(v) && value != "" && !strings.HasPrefix(value, "change-me") {
			problems = append(problems, fmt.Sprintf("env file: %s holds a value for the secret %s; ship a change-me-… placeholder instead", path, v))
		}
	}
	return problems
}

// readEnvFile reads NAME=value lines, as Docker Compose's .env has them.
func readEnvFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	vars := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if !ok {
			return nil, fmt.Errorf("%s: %q is not NAME=value", path, line)
		}
		vars[strings.TrimSpace(name)] = strings.Trim(strings.TrimSpace(value), `"'`)
	}
	return vars, sc.Err()
}

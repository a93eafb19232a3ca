package main

import (
	"fmt"
	"net"
	"os"
	"slices"

	"github.com/compose-spec/compose-go/v2/types"
	"go.yaml.in/yaml/v4"
)

// prometheusConfig is the part of prometheus.yml that names other
// services: static scrape targets and Alertmanager addresses.
type prometheusConfig struct {
	ScrapeConfigs []struct {
		JobName       string         `yaml:"job_name"`
		StaticConfigs []staticConfig `yaml:"static_configs"`
	} `yaml:"scrape_configs"`
	Alerting struct {
		Alertmanagers []struct {
			StaticConfigs []staticConfig `yaml:"static_configs"`
		} `yaml:"alertmanagers"`
	} `yaml:"alerting"`
}

type staticConfig struct {
	Targets []string `yaml:"targets"`
}

// checkPrometheus checks that every static target in prometheus.yml is a
// compose service that always runs and listens on that port, and that
// every errand service is scraped.
func checkPrometheus(path string, p *types.Project, errands []errandService) ([]string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read prometheus configuration: %w", err)
	}
	var cfg prometheusConfig
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	type target struct{ job, addr string }
	var targets []target
	for _, sc := range cfg.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			for _, t := range st.Targets {
				targets = append(targets, target{"job " + sc.JobName, t})
			}
		}
	}
	for _, am := range cfg.Alerting.Alertmanagers {
		for _, st := range am.StaticConfigs {
			for _, t := range st.Targets {
				targets = append(targets, target{"alerting", t})
			}
		}
	}

	var problems []string
	scraped := map[string]bool{}
	for _, t := range targets {
		host, port, err := net.SplitHostPort(t.addr)
		if err != nil {
			problems = append(problems, fmt.Sprintf("prometheus: %s: target %q is not host:port", t.job, t.addr))
			continue
		}
		name := host
		if host == "localhost" || host == "127.0.0.1" {
			name = "prometheus" // Prometheus's own container
		}
		svc, ok := p.Services[name]
		if !ok {
			problems = append(problems, fmt.Sprintf("prometheus: %s: target %s, but there is no service %s in the compose file", t.job, t.addr, name))
			continue
		}
		scraped[name] = true
		if len(svc.Profiles) > 0 {
			problems = append(problems, fmt.Sprintf("prometheus: %s: target %s runs only with profile %v, so it is down without it", t.job, t.addr, svc.Profiles))
		}
		if ports := servedPorts(name, svc, errands); !slices.Contains(ports, port) {
			problems = append(problems, fmt.Sprintf("prometheus: %s: target %s, but %s listens on %v (ADDR for errand, expose or ports otherwise)", t.job, t.addr, name, ports))
		}
	}
	for _, e := range errands {
		if !scraped[e.name] {
			problems = append(problems, fmt.Sprintf("prometheus: errand service %s is not scraped by %s", e.name, path))
		}
	}
	return problems, nil
}

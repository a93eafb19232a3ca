package main

import (
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"unicode"
)

// TestDocLinksResolve checks every relative link of README.md and
// docs/*.md: the file it names exists in the repository and, when it
// has a #anchor, the markdown file it names has a heading with that
// anchor. Files and headings get renamed and moved between documents;
// nothing else notices when a link is left pointing at the old place.
func TestDocLinksResolve(t *testing.T) {
	t.Run("repository", func(t *testing.T) {
		docs, err := filepath.Glob(filepath.Join("docs", "*.md"))
		if err != nil {
			t.Fatal(err)
		}
		docs = append([]string{"README.md"}, docs...)
		for i, doc := range docs {
			docs[i] = filepath.ToSlash(doc)
		}
		problems, err := brokenDocLinks(os.DirFS("."), docs)
		if err != nil {
			t.Fatal(err)
		}
		for _, problem := range problems {
			t.Error(problem)
		}
	})

	t.Run("checker", func(t *testing.T) {
		other := "# Other\n\n## Second heading\n\n## FAQ\n\n## FAQ\n"
		tests := []struct {
			name string
			doc  string // the text of README.md
			want []string
		}{
			{
				name: "existing file and anchor",
				doc:  "See [other](docs/other.md), [its second heading](docs/other.md#second-heading) and [a folder](docs/).\n",
			},
			{
				name: "missing file",
				doc:  "See [gone](docs/gone.md).\n",
				want: []string{`README.md: link "docs/gone.md": got no file docs/gone.md, want an existing file`},
			},
			{
				name: "missing anchor",
				doc:  "See [the third](docs/other.md#third-heading).\n",
				want: []string{`README.md: link "docs/other.md#third-heading": got no heading with anchor "third-heading" in docs/other.md, want one`},
			},
			{
				name: "anchor in the same document, punctuation removed",
				doc:  "# errand\n\n## How a task travels, and what errand promises\n\n## Dashboards (`grafana/`)\n\nSee [travels](#how-a-task-travels-and-what-errand-promises) and [dashboards](#dashboards-grafana).\n",
			},
			{
				name: "repeated headings are numbered",
				doc:  "See [first](docs/other.md#faq), [second](docs/other.md#faq-1) and [third](docs/other.md#faq-2).\n",
				want: []string{`README.md: link "docs/other.md#faq-2": got no heading with anchor "faq-2" in docs/other.md, want one`},
			},
			{
				name: "link text across lines, and a link in a heading",
				doc:  "## Alerts (`alerts.yml`, runbook in [docs/other.md](docs/other.md))\n\nSee [the\nalerts](#alerts-alertsyml-runbook-in-docsothermd).\n",
			},
			{
				name: "links in code are not links",
				doc:  "Run `[x](gone.md)` or `scripts/tally\n[y](gone.md)`:\n\n```sh\necho [z](gone.md)\n```\n",
			},
			{
				name: "web links are not checked",
				doc:  "See [k6](https://k6.io/docs), [it](http://example.com/x.md#y) and [us](mailto:errand@example.com).\n",
			},
			{
				name: "outside the repository",
				doc:  "See [shared](../shared/README.md).\n",
				want: []string{`README.md: link "../shared/README.md": got a path outside the repository, want a file in it`},
			},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				fsys := fstest.MapFS{
					"README.md":     {Data: []byte(tt.doc)},
					"docs/other.md": {Data: []byte(other)},
				}
				got, err := brokenDocLinks(fsys, []string{"README.md", "docs/other.md"})
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(got, tt.want) {
					t.Errorf("problems:\ngot  %q\nwant %q", got, tt.want)
				}
			})
		}
	})

	t.Run("anchors", func(t *testing.T) {
		tests := []struct{ heading, want string }{
			{"Performance", "performance"},
			{"The guide's walkthrough against errand", "the-guides-walkthrough-against-errand"},
			{"Without Docker: scripts/stack", "without-docker-scriptsstack"},
			{"Classic and quorum queues (2026-11-27)", "classic-and-quorum-queues-2026-11-27"},
			{"snake_case stays", "snake_case-stays"},
			{"Two  spaces", "two--spaces"},
		}
		for _, tt := range tests {
			if got := githubHeadingAnchor(tt.heading); got != tt.want {
				t.Errorf("githubHeadingAnchor(%q): got %q, want %q", tt.heading, got, tt.want)
			}
		}
	})
}

var (
	// docHeadingRE matches an ATX heading; the closing #s are not part of
	// its text.
	docHeadingRE = regexp.MustCompile(`^ {0,3}#{1,6}(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$`)
	// docLinkRE matches an inline link or image, [text](target) or
	// [text](target "title"); the text may run over several lines.
	docLinkRE = regexp.MustCompile(`\[([^\]]*)\]\(\s*<?([^\s()<>]*)>?(?:\s+(?:"[^"]*"|'[^']*'))?\s*\)`)
	// docFenceRE matches the line that opens or closes a fenced code
	// block.
	docFenceRE = regexp.MustCompile("^ {0,3}(`{3,}|~{3,})")
)

// brokenDocLinks reads the markdown files docs of fsys and describes each
// relative link among them that names a missing file, a place outside
// fsys, or a heading anchor the target document does not have.
func brokenDocLinks(fsys fs.FS, docs []string) ([]string, error) {
	anchors := map[string]map[string]bool{} // by document
	anchorsOf := func(doc string) (map[string]bool, error) {
		if a, ok := anchors[doc]; ok {
			return a, nil
		}
		text, err := fs.ReadFile(fsys, doc)
		if err != nil {
			return nil, err
		}
		headings, _ := splitMarkdown(string(text))
		a := docHeadingAnchors(headings)
		anchors[doc] = a
		return a, nil
	}

	var problems []string
	for _, doc := range docs {
		text, err := fs.ReadFile(fsys, doc)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", doc, err)
		}
		_, blocks := splitMarkdown(string(text))
		for _, block := range blocks {
			for _, m := range docLinkRE.FindAllStringSubmatch(stripCodeSpans(block), -1) {
				target := m[2]
				if isWebLink(target) {
					continue
				}
				if problem := checkDocLink(fsys, doc, target, anchorsOf); problem != "" {
					problems = append(problems, problem)
				}
			}
		}
	}
	return problems, nil
}

// checkDocLink describes what is wrong with the link target found in doc,
// or returns "" when it resolves.
func checkDocLink(fsys fs.FS, doc, target string, anchorsOf func(string) (map[string]bool, error)) string {
	file, anchor, _ := strings.Cut(target, "#")
	file, err := url.PathUnescape(file)
	if err != nil {
		return fmt.Sprintf("%s: link %q: got an undecodable path (%v), want a file", doc, target, err)
	}
	anchor, err = url.PathUnescape(anchor)
	if err != nil {
		return fmt.Sprintf("%s: link %q: got an undecodable anchor (%v), want a heading's anchor", doc, target, err)
	}

	resolved := doc
	switch {
	case file == "":
		// A bare #anchor points into doc itself.
	case strings.HasPrefix(file, "/"):
		resolved = path.Clean(strings.TrimPrefix(file, "/"))
	default:
		resolved = path.Join(path.Dir(doc), file)
	}
	if resolved == ".." || strings.HasPrefix(resolved, "../") {
		return fmt.Sprintf("%s: link %q: got a path outside the repository, want a file in it", doc, target)
	}
	if _, err := fs.Stat(fsys, resolved); err != nil {
		return fmt.Sprintf("%s: link %q: got no file %s, want an existing file", doc, target, resolved)
	}
	// Only markdown headings have anchors worth checking; GitHub's #L10
	// line anchors in source files are left alone.
	if anchor == "" || !strings.HasSuffix(resolved, ".md") {
		return ""
	}
	anchors, err := anchorsOf(resolved)
	if err != nil {
		return fmt.Sprintf("%s: link %q: got %v reading %s, want a readable file", doc, target, err, resolved)
	}
	if !anchors[anchor] {
		return fmt.Sprintf("%s: link %q: got no heading with anchor %q in %s, want one", doc, target, anchor, resolved)
	}
	return ""
}

func isWebLink(target string) bool {
	lower := strings.ToLower(target)
	return strings.HasPrefix(lower, "http://") || strings.HasPrefix(lower, "https://") || strings.HasPrefix(lower, "mailto:")
}

// splitMarkdown returns the text of markdown's headings, and of all its
// blocks in order (headings, paragraphs, lists, tables), leaving out
// fenced code. A block ends at a blank line, a heading or a fence, as a
// code span or a link's text can run over lines but not past those.
func splitMarkdown(markdown string) (headings, blocks []string) {
	var block []string
	flush := func() {
		if len(block) > 0 {
			blocks = append(blocks, strings.Join(block, "\n"))
			block = nil
		}
	}
	fence := "" // the opening fence while inside a code block
	for _, line := range strings.Split(markdown, "\n") {
		if fence != "" {
			// A closing fence is the opening one's character, at least as
			// many times, and nothing else.
			closing := strings.TrimSpace(line)
			if len(closing) >= len(fence) && strings.Trim(closing, fence[:1]) == "" {
				fence = ""
			}
			continue
		}
		if m := docFenceRE.FindStringSubmatch(line); m != nil {
			flush()
			fence = m[1]
			continue
		}
		if m := docHeadingRE.FindStringSubmatch(line); m != nil {
			flush()
			headings = append(headings, m[1])
			blocks = append(blocks, m[1])
			continue
		}
		if strings.TrimSpace(line) == "" {
			flush()
			continue
		}
		block = append(block, line)
	}
	flush()
	return headings, blocks
}

// docHeadingAnchors returns the anchors GitHub gives headings, taken in
// order: a heading whose anchor is taken already gets -1, -2, … appended,
// as github-slugger does.
func docHeadingAnchors(headings []string) map[string]bool {
	anchors := map[string]bool{}
	repeats := map[string]int{} // by anchor without its number
	for _, heading := range headings {
		base := githubHeadingAnchor(heading)
		anchor := base
		for anchors[anchor] {
			repeats[base]++
			anchor = base + "-" + strconv.Itoa(repeats[base])
		}
		anchors[anchor] = true
	}
	return anchors
}

// githubHeadingAnchor returns the anchor GitHub gives a heading: its text
// as rendered (links as their text, code without backticks), in lower
// case, with punctuation and symbols removed and each space made a '-'.
func githubHeadingAnchor(heading string) string {
	text := docLinkRE.ReplaceAllString(heading, "$1")
	var b strings.Builder
	for _, r := range strings.ToLower(text) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// stripCodeSpans blanks out markdown's inline code spans: a run of
// backticks up to the next run of the same length. A run with no match
// is literal text.
func stripCodeSpans(markdown string) string {
	var b strings.Builder
	for i := 0; i < len(markdown); {
		if markdown[i] != '`' {
			b.WriteByte(markdown[i])
			i++
			continue
		}
		run := i
		for run < len(markdown) && markdown[run] == '`' {
			run++
		}
		ticks := markdown[i:run]
		end := -1
		for j := run; j < len(markdown); {
			k := strings.Index(markdown[j:], ticks)
			if k < 0 {
				break
			}
			k += j
			after := k + len(ticks)
			if after < len(markdown) && markdown[after] == '`' {
				// A longer run does not close this span.
				for after < len(markdown) && markdown[after] == '`' {
					after++
				}
				j = after
				continue
			}
			end = after
			break
		}
		if end < 0 {
			b.WriteString(ticks)
			i = run
			continue
		}
		b.WriteString(strings.Repeat(" ", end-i))
		i = end
	}
	return b.String()
}

// TestArchitectureNamesEveryFile: docs/architecture.md maps the code by
// concern; a file it does not name is a file a newcomer cannot place.
func TestArchitectureNamesEveryFile(t *testing.T) {
	doc, err := os.ReadFile("docs/architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	more, err := filepath.Glob("tasks/*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range append(files, more...) {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		if !strings.Contains(string(doc), "`"+f+"`") && !strings.Contains(string(doc), "`"+filepath.Base(f)+"`") {
			t.Errorf("docs/architecture.md does not name %s", f)
		}
	}
}

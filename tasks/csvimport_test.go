package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// memItems is an Items of the tests.
type memItems struct {
	mu      sync.Mutex
	bases   map[string]time.Time
	items   map[string]Item
	batches int
	// failAfter makes ImportItems fail once this many batches have been
	// stored (0: never), as a store that goes down mid-import.
	failAfter int
}

func newMemItems() *memItems {
	return &memItems{bases: map[string]time.Time{}, items: map[string]Item{}}
}

func (m *memItems) ImportBase(_ context.Context, owner, source string) (time.Time, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := owner + "\x00" + source
	if b, ok := m.bases[k]; ok {
		return b, nil
	}
	m.bases[k] = time.Now()
	return m.bases[k], nil
}

func (m *memItems) ImportItems(_ context.Context, owner string, items []Item) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failAfter > 0 && m.batches >= m.failAfter {
		return 0, errors.New("the store went away")
	}
	m.batches++
	added := 0
	for _, it := range items {
		if _, ok := m.items[it.ID]; !ok {
			m.items[it.ID] = it
			added++
		}
	}
	return added, nil
}

func runImport(t *testing.T, cfg Config, args string) (CSVResult, []Progress, error) {
	t.Helper()
	return runType[CSVResult](t, cfg, ImportCSVName, args)
}

// csvRows is a CSV with a header and n good rows, row i named item-i.
func csvRows(n int) string {
	var b strings.Builder
	b.WriteString("name,description,category,price\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "item-%d,the %dth item,cat-%d,%d.50\n", i, i, i%3, i)
	}
	return b.String()
}

func TestImportCSVStoresRowsInBatchesWithProgress(t *testing.T) {
	files, items := newMemFiles(), newMemItems()
	id := files.add(t, "owner-a", "rows.csv", "text/csv", []byte(csvRows(250)))
	res, reports, err := runImport(t, Config{Files: files, Items: items}, `{"file_id": "`+id+`", "user_id": 7}`)
	if err != nil {
		t.Fatal(err)
	}
	if res.Imported != 250 || res.Total != 250 || res.Added != 250 || res.RejectedCount != 0 || len(res.Rejected) != 0 || res.SourceFileID != id {
		t.Errorf("result %+v, want 250 of 250 imported, all new, none rejected, from %s", res, id)
	}
	if items.batches != 3 {
		t.Errorf("%d batches stored, want 3 for 250 rows in batches of 100", items.batches)
	}
	var got []string
	for _, p := range reports {
		got = append(got, fmt.Sprintf("%d:%d/%d", p.Percent, p.Imported, p.Total))
	}
	if want := "0:0/250 40:100/250 80:200/250 100:250/250"; strings.Join(got, " ") != want {
		t.Errorf("progress %s, want %s", strings.Join(got, " "), want)
	}
	var row Item
	for _, it := range items.items {
		if it.Name == "item-42" {
			row = it
		}
	}
	if row.Description == nil || *row.Description != "the 42th item" || row.Metadata["category"] != "cat-0" || row.Metadata["price"] != "42.50" || row.Metadata["user_id"] != "7" {
		t.Errorf("row 42 stored as %+v, want its description, category, price and the import's user_id", row)
	}
}

func TestImportCSVRejectsBadRowsAndSaysWhy(t *testing.T) {
	files, items := newMemFiles(), newMemItems()
	csv := "name;description;color\n" +
		"lamp;a desk lamp;red\n" + // line 2: good
		";no name;blue\n" + // line 3: no name
		"chair;;green\n" + // line 4: good, no description
		"table;too;many;fields\n" + // line 5
		strings.Repeat("x", 201) + ";long name;red\n" + // line 6
		"shelf;\"an unclosed quote;red\n" // line 7: a parse error to the end
	id := files.add(t, "owner-a", "rows.csv", "text/csv", []byte(csv))
	res, _, err := runImport(t, Config{Files: files, Items: items}, `{"file_id": "`+id+`", "delimiter": ";"}`)
	if err != nil {
		t.Fatal(err)
	}
	want := []RejectedRow{
		{Row: 3, Error: "row name must be 1 to 200 characters"},
		{Row: 5, Error: "row has 4 fields, the header 3"},
		{Row: 6, Error: "row name must be 1 to 200 characters"},
		{Row: 7, Error: "extraneous or missing \" in quoted-field"},
	}
	if res.Imported != 2 || res.RejectedCount != 4 || fmt.Sprint(res.Rejected) != fmt.Sprint(want) {
		t.Errorf("imported %d, rejected %d: %v; want 2 imported and %v", res.Imported, res.RejectedCount, res.Rejected, want)
	}
	if len(items.items) != 2 {
		t.Errorf("%d items stored, want 2", len(items.items))
	}
}

func TestImportCSVListsTheFirstHundredRejectedAndCountsAll(t *testing.T) {
	files, items := newMemFiles(), newMemItems()
	id := files.add(t, "owner-a", "rows.csv", "text/csv", []byte("name,description\n"+strings.Repeat(",empty name\n", 150)+"ok,fine\n"))
	res, _, err := runImport(t, Config{Files: files, Items: items}, `{"file_id": "`+id+`"}`)
	if err != nil {
		t.Fatal(err)
	}
	if res.RejectedCount != 150 || len(res.Rejected) != 100 || res.Imported != 1 || res.Total != 151 {
		t.Errorf("result: %d rejected (%d listed), %d of %d imported; want 150 (100 listed), 1 of 151", res.RejectedCount, len(res.Rejected), res.Imported, res.Total)
	}
}

func TestImportCSVWithoutHeader(t *testing.T) {
	files, items := newMemFiles(), newMemItems()
	id := files.add(t, "owner-a", "rows.csv", "text/csv", []byte("lamp,a lamp,red,big\nchair,,blue,small\n"))
	res, _, err := runImport(t, Config{Files: files, Items: items}, `{"file_id": "`+id+`", "has_header": false}`)
	if err != nil || res.Imported != 2 {
		t.Fatalf("result %+v, %v; want 2 imported", res, err)
	}
	for _, it := range items.items {
		if it.Name == "chair" && (it.Description != nil || it.Metadata["column_3"] != "blue" || it.Metadata["column_4"] != "small") {
			t.Errorf("chair stored as %+v, want no description and column_3, column_4 in metadata", it)
		}
	}
}

func TestImportCSVRefusesUnusableFiles(t *testing.T) {
	for name, tc := range map[string]struct{ csv, want string }{
		"no name column":        {"title,description\nlamp,x\n", "no name column"},
		"a column named $where": {"name,$where\nlamp,x\n", `"$where" cannot be a metadata key`},
		"a dotted column":       {"name,a.b\nlamp,x\n", `"a.b" cannot be a metadata key`},
		"a column twice":        {"name,color,Color\nlamp,x,y\n", "twice"},
	} {
		t.Run(name, func(t *testing.T) {
			files, items := newMemFiles(), newMemItems()
			id := files.add(t, "owner-a", "rows.csv", "text/csv", []byte(tc.csv))
			_, _, err := runImport(t, Config{Files: files, Items: items}, `{"file_id": "`+id+`"}`)
			if err == nil || !strings.Contains(err.Error(), tc.want) || Retryable(err) {
				t.Errorf("error %v, want a permanent one saying %q", err, tc.want)
			}
			if len(items.items) != 0 {
				t.Errorf("%d items stored from an unusable file", len(items.items))
			}
		})
	}
	_, _, err := runImport(t, Config{Files: newMemFiles(), Items: newMemItems()}, `{"file_id": "missing"}`)
	if !errors.Is(err, ErrFileNotFound) || Retryable(err) {
		t.Errorf("unknown file: %v, want a permanent file not found", err)
	}
}

// TestImportCSVRunAgainStoresEveryRowOnce: an import that failed half way
// (the store went down) and ran again, and an import of the same content
// uploaded again, store each row once.
func TestImportCSVRunAgainStoresEveryRowOnce(t *testing.T) {
	files, items := newMemFiles(), newMemItems()
	data := []byte(csvRows(450))
	id := files.add(t, "owner-a", "rows.csv", "text/csv", data)
	items.failAfter = 2
	if _, _, err := runImport(t, Config{Files: files, Items: items}, `{"file_id": "`+id+`"}`); err == nil || !Retryable(err) {
		t.Fatalf("import with the store failing: %v, want a retryable error", err)
	}
	if len(items.items) != 200 {
		t.Fatalf("%d rows stored before the failure, want 200", len(items.items))
	}
	items.failAfter = 0
	res, _, err := runImport(t, Config{Files: files, Items: items}, `{"file_id": "`+id+`"}`)
	if err != nil || res.Imported != 450 || res.Added != 250 {
		t.Fatalf("the retry: %+v, %v; want 450 imported of which 250 new", res, err)
	}
	again := files.add(t, "owner-a", "copy.csv", "text/csv", data)
	res, _, err = runImport(t, Config{Files: files, Items: items}, `{"file_id": "`+again+`"}`)
	if err != nil || res.Imported != 450 || res.Added != 0 {
		t.Fatalf("the same content uploaded again: %+v, %v; want 450 imported, none new", res, err)
	}
	if len(items.items) != 450 {
		t.Errorf("%d items stored, want each of the 450 rows once", len(items.items))
	}
}

func TestCSVArgsNeedOneSource(t *testing.T) {
	def, _ := NewRegistry(Config{}).Lookup(ImportCSVName)
	for args, field := range map[string]string{
		`{}`: "file_id",
		`{"file_id": "a", "file_url": "http://example.com/a.csv"}`: "file_id",
		`{"file_url": "ftp://example.com/a.csv"}`:                  "file_url",
		`{"file_id": "a", "delimiter": ";;"}`:                      "delimiter",
		`{"file_id": "a", "delimiter": "\""}`:                      "delimiter",
		`{"file_id": "a", "delimiter": "\n"}`:                      "delimiter",
	} {
		_, err := def.CheckArgs(json.RawMessage(args))
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != field {
			t.Errorf("arguments %s: error %v, want one about %s", args, err, field)
		}
	}
}

package tasks

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"
)

// ImportCSVName is the guide's import_csv_data (Part 6).
const ImportCSVName = "import_csv_data"

// Bounds of an imported row: those of an item created through the API.
const (
	maxImportName        = 200
	maxImportDescription = 2000
	// importBatch is the guide's batch: one InsertMany per 100 rows.
	importBatch = 100
	// maxRejectedListed is how many rejected rows the result lists; it
	// counts them all.
	maxRejectedListed = 100
)

// Items is where an import stores its rows: errand's items, the ones of
// /api/items.
type Items interface {
	// ImportBase is the time owner's first import of source began: now,
	// for a source never imported before. The ids of an import's rows
	// start with it, so an import run again makes the same ids.
	ImportBase(ctx context.Context, owner, source string) (time.Time, error)
	// ImportItems stores items of owner under their ids; an item whose id
	// is stored already is left as it is. It returns how many were new.
	ImportItems(ctx context.Context, owner string, items []Item) (added int, err error)
}

// Item is a row of an import, as an item to store.
type Item struct {
	// ID is a MongoDB ObjectID in 24 hex digits.
	ID          string
	Name        string
	Description *string
	Metadata    map[string]any
}

// CSVArgs are import_csv_data's arguments.
type CSVArgs struct {
	FileID    string `json:"file_id,omitempty" jsonschema:"minLength=1,maxLength=100" jsonschema_description:"The CSV to import, a file uploaded to /api/files. Give this or file_url."`
	FileURL   string `json:"file_url,omitempty" jsonschema:"maxLength=2048" jsonschema_description:"An http or https URL to fetch the CSV from, instead of file_id; the fetched copy is kept as a file."`
	Delimiter string `json:"delimiter" jsonschema:"minLength=1,maxLength=1" jsonschema_description:"The field separator, one character."`
	HasHeader bool   `json:"has_header" jsonschema_description:"Whether the first line names the columns. A header needs a name column; description is optional; every other column goes into the item's metadata. Without a header the columns are name, description, then column_3 and on into metadata."`
	UserID    UserID `json:"user_id,omitempty"`
}

// Validate checks what the schema cannot: exactly one source, and a
// delimiter encoding/csv can use.
func (a CSVArgs) Validate() error {
	if (a.FileID == "") == (a.FileURL == "") {
		return &FieldError{Field: "file_id", Reason: "give either file_id or file_url"}
	}
	if a.FileURL != "" {
		if err := checkFetchURL("file_url", a.FileURL); err != nil {
			return err
		}
	}
	if r, _ := utf8.DecodeRuneInString(a.Delimiter); r == '"' || r == '\r' || r == '\n' || r == utf8.RuneError || r == 0xFEFF {
		return &FieldError{Field: "delimiter", Reason: "must be a character other than a quote or a line break"}
	}
	return nil
}

// RejectedRow is a row an import did not store, and why.
type RejectedRow struct {
	// Row is the row's line in the file (the header is line 1).
	Row   int    `json:"row"`
	Error string `json:"error"`
}

// CSVResult is import_csv_data's result: the guide's imported and total,
// and what was rejected.
type CSVResult struct {
	Imported      int           `json:"imported"`
	Total         int           `json:"total"`
	RejectedCount int           `json:"rejected_count"`
	Rejected      []RejectedRow `json:"rejected"`
	// Added is how many of the imported rows are new: fewer than
	// imported when the same file was imported before.
	Added        int    `json:"added"`
	SourceFileID string `json:"source_file_id"`
	CompletedAt  string `json:"completed_at"`
}

// importCSVTask streams a CSV into items, 100 rows to an InsertMany, with
// the guide's progress (progress, imported, total). A row that fails
// validation is rejected and reported, never dropped silently. Each row's
// id is a function of the owner, the file's content and the row, so a
// redelivered, retried or repeated import stores every row once.
func importCSVTask(cfg Config) Type[CSVArgs] {
	return Type[CSVArgs]{
		Name:        ImportCSVName,
		Description: "The guide's batch import: a CSV streamed into items in batches of 100, with progress; rows that fail validation are reported, and importing the same file again adds nothing twice.",
		Defaults:    CSVArgs{Delimiter: ",", HasHeader: true},
		Policy:      Policy{MaxRetries: 5, BackoffBase: 2 * time.Second, BackoffMax: time.Minute, TimeLimit: 30 * time.Minute},
		Run: func(ctx context.Context, task Task, args CSVArgs) (any, error) {
			if cfg.Items == nil || cfg.Files == nil {
				return nil, Permanent(errors.New("this process has no item or file store"))
			}
			src, body, err := csvSource(ctx, cfg, task, args)
			if err != nil {
				return nil, err
			}
			total, err := countRows(body, args)
			body.Close()
			if err != nil {
				return nil, fmt.Errorf("read file %s: %w", src.ID, err)
			}
			task.Report(ctx, Progress{Total: total, Status: fmt.Sprintf("Importing %d rows", total)})
			res, err := importRows(ctx, cfg, task, src, args, total)
			if err != nil {
				return nil, err
			}
			res.CompletedAt = Timestamp(cfg.Now())
			return res, nil
		},
	}
}

// csvSource opens the stored file to import: the file_id, or a stored
// copy of what file_url serves (the import reads it twice, once to count
// its rows).
func csvSource(ctx context.Context, cfg Config, task Task, args CSVArgs) (File, io.ReadCloser, error) {
	id := args.FileID
	if id == "" {
		in, err := cfg.Fetcher.fetch(ctx, args.FileURL)
		if err != nil {
			return File{}, nil, err
		}
		defer in.body.Close()
		name := in.name
		if name == "" {
			name = "import.csv"
		}
		saved, err := saveOutput(ctx, cfg, task, name, "text/csv", in.body)
		if err != nil {
			return File{}, nil, err
		}
		id = saved.ID
	}
	return openStored(ctx, cfg, task, id)
}

// newCSVReader reads body as args say. It checks no field counts: a row
// with too few or too many fields is the import's to reject.
func newCSVReader(body io.Reader, args CSVArgs) *csv.Reader {
	r := csv.NewReader(body)
	r.Comma, _ = utf8.DecodeRuneInString(args.Delimiter)
	r.FieldsPerRecord = -1
	r.ReuseRecord = true
	return r
}

// countRows is how many data rows body has, for the progress's total.
func countRows(body io.Reader, args CSVArgs) (int, error) {
	r := newCSVReader(body, args)
	n := 0
	for {
		_, err := r.Read()
		if err == io.EOF {
			break
		}
		var pe *csv.ParseError
		if err != nil && !errors.As(err, &pe) {
			return 0, fmt.Errorf("count rows: %w", err)
		}
		n++
	}
	if args.HasHeader && n > 0 {
		n--
	}
	return n, nil
}

// columns maps a CSV's columns to an item's fields.
type columns struct {
	names       []string // metadata key of each column; "" for name and description
	name, descr int      // their columns; descr is -1 without one
}

// headerColumns reads the header: a name column is required, and every
// other column must be usable as a metadata key.
func headerColumns(header []string) (columns, error) {
	c := columns{names: make([]string, len(header)), name: -1, descr: -1}
	seen := map[string]bool{}
	for i, h := range header {
		h = strings.TrimSpace(strings.TrimPrefix(h, "\uFEFF"))
		key := strings.ToLower(h)
		if seen[key] {
			return c, fmt.Errorf("the header names column %q twice", h)
		}
		seen[key] = true
		switch {
		case key == "name":
			c.name = i
		case key == "description":
			c.descr = i
		case h == "" || strings.HasPrefix(h, "$") || strings.ContainsAny(h, ".\x00") || utf8.RuneCountInString(h) > 100 || !utf8.ValidString(h):
			return c, fmt.Errorf("column %d's name %q cannot be a metadata key: it must be 1 to 100 characters, without a leading $ or a dot", i+1, h)
		default:
			c.names[i] = h
		}
	}
	if c.name < 0 {
		return c, errors.New("the header has no name column")
	}
	return c, nil
}

// positionalColumns are the columns of a CSV without a header.
func positionalColumns(n int) columns {
	c := columns{names: make([]string, n), name: 0, descr: -1}
	if n > 1 {
		c.descr = 1
	}
	for i := 2; i < n; i++ {
		c.names[i] = fmt.Sprintf("column_%d", i+1)
	}
	return c
}

// item makes a row an item, or says why the row is rejected.
func (c columns) item(record []string, userID UserID) (Item, error) {
	if len(record) != len(c.names) {
		return Item{}, fmt.Errorf("has %d fields, the header %d", len(record), len(c.names))
	}
	for _, v := range record {
		if !utf8.ValidString(v) {
			return Item{}, errors.New("is not valid UTF-8")
		}
	}
	it := Item{Name: strings.TrimSpace(record[c.name]), Metadata: map[string]any{}}
	if n := utf8.RuneCountInString(it.Name); n < 1 || n > maxImportName {
		return Item{}, fmt.Errorf("name must be 1 to %d characters", maxImportName)
	}
	if c.descr >= 0 && record[c.descr] != "" {
		d := record[c.descr]
		if utf8.RuneCountInString(d) > maxImportDescription {
			return Item{}, fmt.Errorf("description must be at most %d characters", maxImportDescription)
		}
		it.Description = &d
	}
	for i, key := range c.names {
		if key != "" && record[i] != "" {
			it.Metadata[key] = record[i]
		}
	}
	if _, given := it.Metadata["user_id"]; !given && userID != "" {
		it.Metadata["user_id"] = string(userID)
	}
	return it, nil
}

// importRows reads src and stores its rows in batches.
func importRows(ctx context.Context, cfg Config, task Task, src File, args CSVArgs, total int) (CSVResult, error) {
	source := "sha256:" + src.SHA256
	base, err := cfg.Items.ImportBase(ctx, task.Owner, source)
	if err != nil {
		return CSVResult{}, fmt.Errorf("begin the import: %w", err)
	}
	_, body, err := openStored(ctx, cfg, task, src.ID)
	if err != nil {
		return CSVResult{}, err
	}
	defer body.Close()
	r := newCSVReader(body, args)
	res := CSVResult{Total: total, Rejected: []RejectedRow{}, SourceFileID: src.ID}
	reject := func(line int, why string) {
		res.RejectedCount++
		if len(res.Rejected) < maxRejectedListed {
			res.Rejected = append(res.Rejected, RejectedRow{Row: line, Error: why})
		}
	}
	batch := make([]Item, 0, importBatch)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		added, err := cfg.Items.ImportItems(ctx, task.Owner, batch)
		if err != nil {
			return fmt.Errorf("store rows: %w", err)
		}
		res.Imported += len(batch)
		res.Added += added
		batch = batch[:0]
		done := res.Imported + res.RejectedCount
		task.Report(ctx, Progress{
			Current: done, Total: total, Percent: done * 100 / max(total, 1), Imported: res.Imported,
			Status: fmt.Sprintf("Imported %d of %d rows", res.Imported, total),
		})
		return nil
	}

	var cols *columns
	for dataRow := 0; ; {
		record, err := r.Read()
		if err == io.EOF {
			break
		}
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			if cols == nil && args.HasHeader {
				return CSVResult{}, Permanent(fmt.Errorf("the header: %v", pe.Err))
			}
			reject(pe.StartLine, pe.Err.Error())
			dataRow++
			continue
		}
		if err != nil {
			return CSVResult{}, fmt.Errorf("read file %s: %w", src.ID, err)
		}
		if cols == nil {
			c := positionalColumns(len(record))
			if args.HasHeader {
				if c, err = headerColumns(record); err != nil {
					return CSVResult{}, Permanent(err)
				}
				cols = &c
				continue
			}
			cols = &c
		}
		dataRow++
		line, _ := r.FieldPos(0)
		it, err := cols.item(record, args.UserID)
		if err != nil {
			reject(line, "row "+err.Error())
			continue
		}
		it.ID = importedItemID(base, task.Owner, source, dataRow)
		batch = append(batch, it)
		if len(batch) == importBatch {
			if err := flush(); err != nil {
				return CSVResult{}, err
			}
		}
	}
	if err := flush(); err != nil {
		return CSVResult{}, err
	}
	return res, nil
}

// importedItemID is the id of data row n of owner's import of source:
// an ObjectID whose time is the import's base, then four bytes of the
// import's digest and the row number, so the rows of an import list
// together and in order, and the same row always has the same id.
func importedItemID(base time.Time, owner, source string, n int) string {
	var id [12]byte
	binary.BigEndian.PutUint32(id[0:4], uint32(base.Unix()))
	sum := sha256.Sum256([]byte(owner + "\x00" + source))
	copy(id[4:8], sum[:4])
	binary.BigEndian.PutUint32(id[8:12], uint32(n))
	return hex.EncodeToString(id[:])
}

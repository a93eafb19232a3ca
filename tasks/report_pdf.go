package tasks

import (
	"bytes"
	"fmt"
	"image/color"
	"io"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/go-pdf/fpdf"
	"golang.org/x/image/font/gofont/gobold"
	"golang.org/x/image/font/gofont/goregular"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// reportCharts are a report's charts as PNG images; nil where the month
// has nothing to draw.
type reportCharts struct {
	itemsPerDay, categories, tasks []byte
}

// Chart sizes and resolution: the width of an A4 page's text, sharp in
// print.
const (
	chartWidth  = 17 * vg.Centimeter
	chartHeight = 7.5 * vg.Centimeter
	chartDPI    = 200
)

var (
	stateColors = map[string]color.Color{
		"SUCCESS": color.RGBA{R: 46, G: 139, B: 87, A: 255},
		"FAILURE": color.RGBA{R: 200, G: 55, B: 55, A: 255},
		"REVOKED": color.RGBA{R: 140, G: 140, B: 140, A: 255},
	}
	reportStates = []string{"SUCCESS", "FAILURE", "REVOKED"}
	barColor     = color.RGBA{R: 52, G: 101, B: 164, A: 255}
)

// drawCharts draws the month's charts with gonum/plot.
func drawCharts(d *monthData) (reportCharts, error) {
	var c reportCharts
	var err error
	if d.items > 0 {
		labels := make([]string, d.days)
		for i := range labels {
			if day := i + 1; day == 1 || day%5 == 0 {
				labels[i] = strconv.Itoa(day)
			}
		}
		if c.itemsPerDay, err = barChart("Items created per day", "day of "+d.month.Format("January 2006"), labels, d.itemsPerDay, false); err != nil {
			return c, err
		}
		names, counts := d.categories()
		if c.categories, err = barChart("Items per category", "", names, counts, true); err != nil {
			return c, err
		}
	}
	if d.tasksTotal > 0 {
		if c.tasks, err = taskChart(d); err != nil {
			return c, err
		}
	}
	return c, nil
}

func barChart(title, xLabel string, labels []string, values []float64, horizontal bool) ([]byte, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xLabel
	// Bars as thick as the gaps between them, along the axis they share.
	along := chartWidth
	if horizontal {
		along = chartHeight
	}
	bars, err := plotter.NewBarChart(plotter.Values(values), min(along/vg.Length(2*len(values)+2), 1.5*vg.Centimeter))
	if err != nil {
		return nil, fmt.Errorf("chart %q: %w", title, err)
	}
	bars.Color = barColor
	bars.LineStyle.Width = 0
	bars.Horizontal = horizontal
	p.Add(bars)
	if horizontal {
		// The first label on top: a horizontal chart's y axis counts up.
		labels, values = slices.Clone(labels), slices.Clone(values)
		slices.Reverse(labels)
		slices.Reverse(values)
		bars.Values = values
		p.NominalY(labels...)
		p.X.Min = 0
	} else {
		p.NominalX(labels...)
		p.Y.Min = 0
	}
	return renderChart(p, title)
}

// taskChart stacks each task type's successes, failures and revocations.
func taskChart(d *monthData) ([]byte, error) {
	p := plot.New()
	p.Title.Text = "Finished tasks per type"
	types := d.taskTypes()
	width := min(chartWidth/vg.Length(2*len(types)+2), 2*vg.Centimeter)
	var below *plotter.BarChart
	for _, state := range reportStates {
		values := make(plotter.Values, len(types))
		for i, t := range types {
			values[i] = float64(d.tasks[t].states[state])
		}
		bars, err := plotter.NewBarChart(values, width)
		if err != nil {
			return nil, fmt.Errorf("task chart: %w", err)
		}
		bars.Color = stateColors[state]
		bars.LineStyle.Width = 0
		if below != nil {
			bars.StackOn(below)
		}
		below = bars
		p.Add(bars)
		p.Legend.Add(state, bars)
	}
	p.Legend.Top = true
	p.Legend.Left = true
	p.NominalX(types...)
	// Headroom above the tallest bar for the legend.
	tallest := 0
	for _, t := range types {
		n := 0
		for _, c := range d.tasks[t].states {
			n += c
		}
		tallest = max(tallest, n)
	}
	p.Y.Min, p.Y.Max = 0, 5*math.Ceil(1.35*float64(tallest)/5)
	return renderChart(p, p.Title.Text)
}

func renderChart(p *plot.Plot, title string) ([]byte, error) {
	canvas := vgimg.NewWith(vgimg.UseWH(chartWidth, chartHeight), vgimg.UseDPI(chartDPI))
	p.Draw(draw.New(canvas))
	var buf bytes.Buffer
	if _, err := (vgimg.PngCanvas{Canvas: canvas}).WriteTo(&buf); err != nil {
		return nil, fmt.Errorf("chart %q: encode PNG: %w", title, err)
	}
	return buf.Bytes(), nil
}

// writeReportPDF writes the report: a title page with the month's totals,
// a page of items and a page of tasks (each only when the month has
// them), and returns its page count.
func writeReportPDF(w io.Writer, d *monthData, charts reportCharts) (int, error) {
	pdf := fpdf.New("P", "mm", "A4", "")
	pdf.AddUTF8FontFromBytes("go", "", goregular.TTF)
	pdf.AddUTF8FontFromBytes("go", "B", gobold.TTF)
	pdf.SetCreationDate(d.generatedAt)
	pdf.SetModificationDate(d.generatedAt)
	pdf.SetTitle(fmt.Sprintf("Report for user %s, %s", d.userID, d.month.Format("January 2006")), true)
	pdf.SetCreator("errand", true)
	pdf.SetAutoPageBreak(true, 20)
	pdf.SetFooterFunc(func() {
		pdf.SetY(-15)
		pdf.SetFont("go", "", 8)
		pdf.SetTextColor(110, 110, 110)
		pdf.CellFormat(0, 10, fmt.Sprintf("errand · user %s · %s · page %d", d.userID, d.month.Format("2006-01"), pdf.PageNo()), "", 0, "C", false, 0, "")
	})
	month := d.month.Format("January 2006")

	pdf.AddPage()
	pdf.SetY(60)
	pdf.SetFont("go", "B", 28)
	pdf.SetTextColor(30, 30, 30)
	pdf.CellFormat(0, 14, "Monthly report", "", 1, "C", false, 0, "")
	pdf.SetFont("go", "", 16)
	pdf.CellFormat(0, 10, fmt.Sprintf("User %s · %s", d.userID, month), "", 1, "C", false, 0, "")
	pdf.SetFont("go", "", 10)
	pdf.SetTextColor(110, 110, 110)
	pdf.CellFormat(0, 8, "Generated "+d.generatedAt.Format("2 January 2006, 15:04 MST"), "", 1, "C", false, 0, "")
	pdf.Ln(20)
	pdf.SetTextColor(30, 30, 30)
	if d.empty() {
		pdf.SetFont("go", "", 13)
		pdf.MultiCell(0, 8, fmt.Sprintf("There were no items and no tasks for user %s in %s: nothing to chart.", d.userID, month), "", "C", false)
	} else {
		totals := [][2]string{
			{"Items created", strconv.Itoa(d.items)},
			{"Tasks finished", strconv.Itoa(d.tasksTotal)},
		}
		var states [3]int
		for _, t := range d.tasks {
			for i, s := range reportStates {
				states[i] += t.states[s]
			}
		}
		for i, s := range reportStates {
			totals = append(totals, [2]string{"  " + s, strconv.Itoa(states[i])})
		}
		if d.items > 0 {
			busiest := 0
			for i, n := range d.itemsPerDay {
				if n > d.itemsPerDay[busiest] {
					busiest = i
				}
			}
			totals = append(totals, [2]string{"Busiest day", fmt.Sprintf("%s (%d items)", d.month.AddDate(0, 0, busiest).Format("2 January"), int(d.itemsPerDay[busiest]))})
		}
		pdf.SetFont("go", "", 12)
		for _, row := range totals {
			pdf.SetX(50)
			pdf.CellFormat(60, 9, row[0], "B", 0, "L", false, 0, "")
			pdf.CellFormat(50, 9, row[1], "B", 1, "R", false, 0, "")
		}
	}

	if d.items > 0 {
		pdf.AddPage()
		heading(pdf, "Items")
		chart(pdf, "items-per-day", charts.itemsPerDay)
		chart(pdf, "categories", charts.categories)
		names, counts := d.categories()
		rows := make([][]string, len(names))
		for i, n := range names {
			rows[i] = []string{n, strconv.Itoa(int(counts[i])), fmt.Sprintf("%.1f %%", 100*counts[i]/float64(d.items))}
		}
		table(pdf, []string{"Category", "Items", "Share"}, []float64{90, 40, 40}, rows, []string{"Total", strconv.Itoa(d.items), "100.0 %"})
	}
	if d.tasksTotal > 0 {
		pdf.AddPage()
		heading(pdf, "Tasks")
		chart(pdf, "tasks", charts.tasks)
		var rows [][]string
		var sums [3]int
		for _, t := range d.taskTypes() {
			tally := d.tasks[t]
			median, longest := runStats(tally.runs)
			row := []string{t}
			total := 0
			for i, s := range reportStates {
				row = append(row, strconv.Itoa(tally.states[s]))
				sums[i] += tally.states[s]
				total += tally.states[s]
			}
			rows = append(rows, append(row, strconv.Itoa(total), duration(median), duration(longest)))
		}
		footer := []string{"Total", strconv.Itoa(sums[0]), strconv.Itoa(sums[1]), strconv.Itoa(sums[2]), strconv.Itoa(d.tasksTotal), "", ""}
		table(pdf, []string{"Type", "Success", "Failure", "Revoked", "Total", "Median run", "Longest"}, []float64{52, 18, 18, 18, 16, 24, 24}, rows, footer)
	}
	if err := pdf.Output(w); err != nil {
		return 0, fmt.Errorf("write the PDF: %w", err)
	}
	return pdf.PageCount(), nil
}

func heading(pdf *fpdf.Fpdf, text string) {
	pdf.SetFont("go", "B", 18)
	pdf.SetTextColor(30, 30, 30)
	pdf.CellFormat(0, 12, text, "", 1, "L", false, 0, "")
	pdf.Ln(2)
}

// chart places a chart's PNG at the page's full text width.
func chart(pdf *fpdf.Fpdf, name string, png []byte) {
	if png == nil {
		return
	}
	opts := fpdf.ImageOptions{ImageType: "PNG", ReadDpi: false}
	pdf.RegisterImageOptionsReader(name, opts, bytes.NewReader(png))
	left, _, right, _ := pdf.GetMargins()
	pageW, _ := pdf.GetPageSize()
	w := pageW - left - right
	pdf.ImageOptions(name, left, pdf.GetY(), w, w*float64(chartHeight/chartWidth), true, opts, 0, "")
	pdf.Ln(4)
}

// table draws a header, rows and a totals row; the first column is left
// aligned, the others right.
func table(pdf *fpdf.Fpdf, header []string, widths []float64, rows [][]string, totals []string) {
	align := func(i int) string {
		if i == 0 {
			return "L"
		}
		return "R"
	}
	pdf.SetFont("go", "B", 10)
	pdf.SetFillColor(232, 236, 242)
	for i, h := range header {
		pdf.CellFormat(widths[i], 8, h, "B", 0, align(i), true, 0, "")
	}
	pdf.Ln(-1)
	pdf.SetFont("go", "", 10)
	for _, row := range rows {
		for i, v := range row {
			pdf.CellFormat(widths[i], 7, v, "", 0, align(i), false, 0, "")
		}
		pdf.Ln(-1)
	}
	pdf.SetFont("go", "B", 10)
	for i, v := range totals {
		pdf.CellFormat(widths[i], 8, v, "T", 0, align(i), false, 0, "")
	}
	pdf.Ln(-1)
}

// duration shows a run time to a useful precision: "-" for none.
func duration(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1f s", d.Seconds())
	default:
		return d.Round(time.Second).String()
	}
}

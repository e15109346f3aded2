package main

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"math"
	"strconv"
)

// Chart is a grouped bar chart: one group per case, one bar per series
// (daemon) in each, the bar at the median with a whisker up to the maximum.
type Chart struct {
	Title string
	// Notes are printed under the title: machine, date, repetitions.
	Notes  []string
	Unit   string
	Series []string
	Groups []Group
}

// Group is one case of a chart.
type Group struct {
	Label string
	// Bars are by series name; a series without a bar leaves a gap.
	Bars map[string]Stat
}

var palette = []string{"#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860"}

const (
	chartWidth   = 760.0
	plotHeight   = 260.0
	marginLeft   = 80.0
	marginRight  = 20.0
	lineHeight   = 16.0
	legendHeight = 24.0
)

// SVG renders c as a standalone SVG document.
func (c Chart) SVG() []byte {
	top := 30 + lineHeight*float64(len(c.Notes)) + 24
	plotW := chartWidth - marginLeft - marginRight
	height := top + plotHeight + 40 + legendHeight
	yMax, step := axis(c.maxValue())
	y := func(v float64) float64 { return top + plotHeight - v/yMax*plotHeight }

	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%s" height="%s" viewBox="0 0 %s %s" font-family="sans-serif" font-size="12">`+"\n",
		num(chartWidth), num(height), num(chartWidth), num(height))
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	text(&b, marginLeft, 22, "start", `font-size="16" font-weight="bold"`, c.Title)
	for i, n := range c.Notes {
		text(&b, marginLeft, 22+lineHeight*float64(i+1), "start", `fill="#444"`, n)
	}
	// y axis, grid and ticks
	for v := 0.0; v <= yMax+step/2; v += step {
		fmt.Fprintf(&b, `<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="#ddd"/>`+"\n", num(marginLeft), num(y(v)), num(marginLeft+plotW), num(y(v)))
		text(&b, marginLeft-6, y(v)+4, "end", "", strconv.FormatFloat(v, 'f', -1, 64))
	}
	fmt.Fprintf(&b, `<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="black"/>`+"\n", num(marginLeft), num(top), num(marginLeft), num(top+plotHeight))
	fmt.Fprintf(&b, `<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="black"/>`+"\n", num(marginLeft), num(top+plotHeight), num(marginLeft+plotW), num(top+plotHeight))
	fmt.Fprintf(&b, `<text x="%s" y="%s" text-anchor="middle" transform="rotate(-90 %s %s)">%s</text>`+"\n",
		num(18), num(top+plotHeight/2), num(18), num(top+plotHeight/2), esc(c.Unit))

	if len(c.Groups) > 0 && len(c.Series) > 0 {
		gw := plotW / float64(len(c.Groups))
		bw := gw * 0.8 / float64(len(c.Series))
		for gi, g := range c.Groups {
			x0 := marginLeft + gw*float64(gi) + gw*0.1
			for si, s := range c.Series {
				st, ok := g.Bars[s]
				if !ok {
					continue
				}
				x := x0 + bw*float64(si)
				fmt.Fprintf(&b, `<rect x="%s" y="%s" width="%s" height="%s" fill="%s"><title>%s %s: median %s, max %s (n=%d)</title></rect>`+"\n",
					num(x+1), num(y(st.Median)), num(bw-2), num(y(0)-y(st.Median)), palette[si%len(palette)],
					esc(g.Label), esc(s), label(st.Median), label(st.Max), st.N)
				cx := x + bw/2
				if st.Max > st.Median {
					fmt.Fprintf(&b, `<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="black"/>`+"\n", num(cx), num(y(st.Median)), num(cx), num(y(st.Max)))
					fmt.Fprintf(&b, `<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="black"/>`+"\n", num(cx-bw/6), num(y(st.Max)), num(cx+bw/6), num(y(st.Max)))
				}
				top := y(max(st.Max, st.Median))
				text(&b, cx, top-16, "middle", `font-size="10"`, label(st.Median))
				text(&b, cx, top-4, "middle", `font-size="9" fill="#555"`, "max "+label(st.Max))
			}
			text(&b, marginLeft+gw*(float64(gi)+0.5), top+plotHeight+18, "middle", "", g.Label)
		}
	}
	// legend
	ly := top + plotHeight + 44
	lx := marginLeft
	for si, s := range c.Series {
		fmt.Fprintf(&b, `<rect x="%s" y="%s" width="12" height="12" fill="%s"/>`+"\n", num(lx), num(ly-10), palette[si%len(palette)])
		text(&b, lx+16, ly, "start", "", s)
		lx += 16 + 7.5*float64(len(s)) + 24
	}
	text(&b, chartWidth-marginRight, ly, "end", `fill="#444"`, "bar: median, whisker: max")
	b.WriteString("</svg>\n")
	return b.Bytes()
}

func (c Chart) maxValue() float64 {
	m := 0.0
	for _, g := range c.Groups {
		for _, s := range g.Bars {
			m = max(m, s.Median, s.Max)
		}
	}
	return m
}

// axis returns a y-axis top of 1, 2 or 5 times a power of ten at or above
// m (with room for the labels above the bars) and its tick step.
func axis(m float64) (top, step float64) {
	if m <= 0 || math.IsNaN(m) || math.IsInf(m, 0) {
		return 1, 0.2
	}
	m *= 1.15
	p := math.Pow(10, math.Floor(math.Log10(m)))
	for _, f := range []float64{1, 2, 2.5, 5, 10} {
		if f*p >= m {
			top = f * p
			break
		}
	}
	return top, top / 5
}

func text(b *bytes.Buffer, x, y float64, anchor, attrs, s string) {
	if attrs != "" {
		attrs = " " + attrs
	}
	fmt.Fprintf(b, `<text x="%s" y="%s" text-anchor="%s"%s>%s</text>`+"\n", num(x), num(y), anchor, attrs, esc(s))
}

func esc(s string) string {
	var b bytes.Buffer
	_ = xml.EscapeText(&b, []byte(s)) // writes to a bytes.Buffer do not fail
	return b.String()
}

func num(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }

// label prints a figure with 3 significant digits (at least the integer
// part): 0.84, 37.2, 318, 57594.
func label(v float64) string {
	a := math.Abs(v)
	switch {
	case a == 0:
		return "0"
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 0.01:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'g', 2, 64)
	}
}

package capacity

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/sluicebus/sluice/internal/bytesize"
)

// WriteText writes the blueprint as aligned text tables.
func (b Blueprint) WriteText(w io.Writer) error {
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "Capacity blueprint: %s msg/s of %s, publish p99 ≤ %s ms, %d cores per node",
		num(b.Rate), bytesize.Size(b.SizeBytes), num(b.P99Millis), b.Cores)
	if b.Batch {
		buf.WriteString(", NDJSON batches")
	}
	fmt.Fprintf(&buf, "\ncalibration: %s\n\n", b.Calibration)

	tw := tabwriter.NewWriter(&buf, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODES\tCOUNT\tNEEDED\tMSG/S EACH\tUTIL\tUTIL N-1\tMEMORY EACH\tDISK EACH\tWHY")
	row := func(name string, n Nodes) {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%.2f\t%.2f\t%s\t%s\t%s\n", name, n.Count, n.Needed, num(n.NodeRate),
			n.Utilization, n.UtilizationN1, size(n.MemoryBytes), size(n.DiskBytes), n.Reason)
	}
	row("gateway", b.Gateways)
	row("broker", b.Brokers)
	for _, f := range b.Workers {
		row("worker "+f.Topic+"/"+f.Family, f.Nodes)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(&buf, "\nratio gateways:brokers:workers = %s\n", b.Ratio)
	fmt.Fprintf(&buf, "utilization target %.2f for gateways and brokers: min(%.2f, 1 − ln(100)·S/p99), S = %s µs; workers %.2f (not on the publish path)\n",
		b.Utilization, RhoMax, num(b.ServiceMicros), b.WorkerUtilization)
	if b.PublishP99Millis > 0 {
		fmt.Fprintf(&buf, "measured publish p99 %s ms", num(b.PublishP99Millis))
		if b.EndToEndP99Millis > 0 {
			fmt.Fprintf(&buf, ", end to end %s ms", num(b.EndToEndP99Millis))
		}
		buf.WriteString(" (calibration, at half load)\n")
	}

	buf.WriteString("\n")
	tw = tabwriter.NewWriter(&buf, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TOPIC\tMSG/S\tREPLICAS\tBROKER CPU/MSG\tSTREAM CEILING\tSTREAM BOUND\tDISK (ALL REPLICAS)")
	for _, t := range b.Topics {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s µs\t%s\t%s\t%s\n", t.Name, num(t.Rate), t.Replicas, num(t.BrokerCPUMillis*1000),
			num(t.StreamCeiling), size(t.StreamBytes), size(t.DiskBytes))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	buf.WriteString("\n")
	tw = tabwriter.NewWriter(&buf, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FAMILY\tWORKER MSG/S\tFROM\tHANDLER\tCREDIT\tCREDIT NEEDED")
	for _, f := range b.Workers {
		fmt.Fprintf(tw, "%s/%s\t%s\t%s\t%s ms\t%d\t%d\n", f.Topic, f.Family, num(f.WorkerRate), f.Source,
			num(f.HandlerMillis), f.Credit, f.CreditNeeded)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(&buf, "\nconfig: alarms.planned_rate: %s\n", strconv.FormatFloat(b.PlannedRate, 'f', -1, 64))
	list := func(title string, items []string) {
		if len(items) == 0 {
			return
		}
		fmt.Fprintf(&buf, "\n%s:\n", title)
		for _, s := range items {
			fmt.Fprintf(&buf, "  - %s\n", s)
		}
	}
	list("warnings", b.Warnings)
	list("notes", b.Notes)
	_, err := w.Write(buf.Bytes())
	return err
}

// num writes x with thousands separators: no decimals from 100 up, else up
// to three significant digits.
func num(x float64) string {
	if math.Abs(x) < 100 {
		return strconv.FormatFloat(x, 'g', 3, 64)
	}
	s := strconv.FormatInt(int64(math.Round(x)), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

func size(n int64) string {
	if n == 0 {
		return "-"
	}
	return bytesize.Size(n).String()
}

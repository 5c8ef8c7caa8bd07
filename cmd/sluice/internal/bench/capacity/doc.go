// Package capacity computes Sluice's capacity blueprint (`sluice plan`): from
// a planned ingest rate, a message size, a publish-latency target and the
// topology's bounds, how many gateways, brokers and workers of each family to
// run, each with one node of headroom, and the memory and disk the bounds
// imply. It is arithmetic over measured figures (a Calibration); its only I/O
// is reading a calibration file.
package capacity

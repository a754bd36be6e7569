// Command jetchat-bench is jetchat's load generator: it drives a running
// node over real WebSocket connections with the project's client package, in
// its own process, prints a progress line every second and a summary table
// at the end (JSON with --json), and fails when any sent message is lost.
//
//	jetchat-bench dm      --users 1000 --rate 3000 --duration 30s
//	jetchat-bench connect --conns 10000 --ramp 2000
//	jetchat-bench backlog --users 100 --messages 1000
//
// Tokens are minted with the node's HS256 secret: --data (the node's data
// folder, default ./data) or --jwt-secret, like `jetchat token`.
//
// The tool runs its own collector at GOGC=400 unless GOGC is set (toolGOGC).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"sync"
	"syscall"
)

// toolGOGC is the load tool's collector setting when GOGC is not set. The
// tool keeps every message's timings and ids for its accounting; with Go's
// default (100) it collects about once a second in a dm run, and each
// collection holds up the goroutines reading frames for 10-20 ms, which
// the latency figures would charge to the node (docs/benchmarks.md,
// "6 December"). The tool's memory is not what it measures.
const toolGOGC = 400

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(toolGOGC)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "jetchat-bench:", err)
		os.Exit(1)
	}
}

const usage = `usage: jetchat-bench <scenario> [flags]

scenarios:
  dm        users in pairs send 1:1 messages at an offered rate; every message is acked
  connect   open many idle sessions; connect latency and server memory per session
  backlog   offline users with waiting messages; catch-up time and server memory
  group     groups of online members; fan-out latency and throughput
  mixed     a soak of 1:1, groups, receipts, presence, typing and media

Run 'jetchat-bench <scenario> -h' for its flags.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no scenario given")
	}
	scenarios := map[string]func(context.Context, []string, io.Writer, io.Writer) error{
		"dm":      runDM,
		"connect": runConnect,
		"backlog": runBacklog,
		"group":   runGroup,
		"mixed":   runMixed,
	}
	f := scenarios[args[0]]
	if f == nil {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown scenario %q", args[0])
	}
	if p := os.Getenv("JETCHAT_BENCH_CPUPROFILE"); p != "" {
		// Profile the load tool itself (it shares the machine with the node).
		out, err := os.Create(p)
		if err != nil {
			return err
		}
		defer out.Close()
		if err := pprof.StartCPUProfile(out); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	// The scenarios' goroutines report to stderr concurrently (errors as
	// they happen, beside the progress line): one line at a time.
	return f(ctx, args[1:], stdout, &lockedWriter{w: stderr})
}

// lockedWriter serialises writes to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

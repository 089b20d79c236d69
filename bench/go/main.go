// gopool: the Go worker-pool pattern (a jobs channel, N goroutines, a results
// channel, context cancel), the peer that flowpool's stream_rss driver is timed
// against as a whole process by scripts/bench. Standard library only.
//
//	gopool -workload empty|spin|sleep|cancel -jobs N -workers W [-iterations I] [-ms M] [-capacity C] [-report-rss]
//
// Prints one JSON line: peer, workload, jobs, workers, wall_ns (the run, not
// the result check), sum, and for
// cancel also cancel_ns (cancel() to every goroutine returned) and cancelled.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// spin is bench/workloads.hpp's spin(): iterations rounds of xorshift, no clock reads.
func spin(iterations uint64, x uint64) uint64 {
	for i := uint64(0); i < iterations; i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	return x
}

type result struct {
	Peer      string `json:"peer"`
	Workload  string `json:"workload"`
	Jobs      uint64 `json:"jobs"`
	Workers   int    `json:"workers"`
	WallNs    int64  `json:"wall_ns"`
	Sum       uint64 `json:"sum"`
	CancelNs  int64  `json:"cancel_ns,omitempty"`
	Cancelled uint64 `json:"cancelled,omitempty"`
	Accounted bool   `json:"accounted"`
	PeakRSS   uint64 `json:"peak_rss_bytes,omitempty"`
}

// peakRSS is this process's VmHWM in bytes (0 if /proc is unreadable).
func peakRSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			var kb uint64
			fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(line, "VmHWM:")), "%d", &kb)
			return kb * 1024
		}
	}
	return 0
}

// run is the pattern: a producer goroutine fills the bounded jobs channel, N
// workers turn jobs into results, the caller folds the results serially.
func run(ctx context.Context, jobs uint64, workers int, capacity int, work func(uint64) uint64) uint64 {
	jobCh := make(chan uint64, capacity)
	resCh := make(chan uint64, capacity)
	go func() {
		defer close(jobCh)
		for i := uint64(0); i < jobs; i++ {
			select {
			case jobCh <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobCh {
				resCh <- work(j)
			}
		}()
	}
	go func() { wg.Wait(); close(resCh) }()
	var sum uint64
	for r := range resCh {
		sum += r
	}
	return sum
}

// runCancel queues `jobs` jobs behind 2 running ones that wait for ctx.Done(),
// then times cancel() until every worker returned, with each job accounted:
// finished, or seen after the cancel and counted as cancelled.
func runCancel(jobs uint64, workers int) (int64, uint64, bool) {
	ctx, cancel := context.WithCancel(context.Background())
	jobCh := make(chan uint64, jobs+uint64(workers))
	var started sync.WaitGroup
	var mu sync.Mutex
	var nFinished, nCancelled uint64
	started.Add(workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			first := true
			var localCancelled uint64
			var localFinished uint64
			for range jobCh {
				if ctx.Err() != nil {
					localCancelled++
					continue
				}
				if first {
					first = false
					started.Done()
				}
				<-ctx.Done() // a running job that stops on cancel
				localFinished++
			}
			mu.Lock()
			nFinished += localFinished
			nCancelled += localCancelled
			mu.Unlock()
		}()
	}
	for i := uint64(0); i < jobs+uint64(workers); i++ {
		jobCh <- i
	}
	close(jobCh)
	started.Wait()
	for uint64(len(jobCh)) != jobs {
		time.Sleep(time.Microsecond)
	}
	t0 := time.Now()
	cancel()
	wg.Wait()
	d := time.Since(t0).Nanoseconds()
	return d, nCancelled, nCancelled+nFinished == jobs+uint64(workers)
}

func main() {
	workload := flag.String("workload", "empty", "empty | spin | sleep | cancel")
	jobs := flag.Uint64("jobs", 1000000, "number of jobs (for cancel: jobs queued behind the running ones)")
	workers := flag.Int("workers", 2, "N worker goroutines")
	iterations := flag.Uint64("iterations", 0, "spin: xorshift rounds per job")
	ms := flag.Int("ms", 50, "sleep: milliseconds per job")
	capacity := flag.Int("capacity", 1024, "channel buffer size")
	reportRSS := flag.Bool("report-rss", false, "add peak_rss_bytes (VmHWM) to the output")
	flag.Parse()

	res := result{Peer: "go", Workload: *workload, Jobs: *jobs, Workers: *workers, Accounted: true}
	t0 := time.Now()
	switch *workload {
	case "empty":
		res.Sum = run(context.Background(), *jobs, *workers, *capacity, func(j uint64) uint64 { return j })
		res.Accounted = res.Sum == *jobs*(*jobs-1)/2
	case "spin":
		it := *iterations
		res.Sum = run(context.Background(), *jobs, *workers, *capacity, func(j uint64) uint64 { return spin(it, j+1) })
		res.WallNs = time.Since(t0).Nanoseconds()
		var want uint64
		for j := uint64(0); j < *jobs; j++ {
			want += spin(it, j+1)
		}
		res.Accounted = res.Sum == want
	case "sleep":
		d := time.Duration(*ms) * time.Millisecond
		res.Sum = run(context.Background(), *jobs, *workers, *capacity, func(j uint64) uint64 { time.Sleep(d); return j })
		res.Accounted = res.Sum == *jobs*(*jobs-1)/2
	case "cancel":
		res.CancelNs, res.Cancelled, res.Accounted = runCancel(*jobs, *workers)
	default:
		fmt.Fprintf(os.Stderr, "gopool: unknown workload %q\n", *workload)
		os.Exit(2)
	}
	if res.WallNs == 0 {
		res.WallNs = time.Since(t0).Nanoseconds()
	}
	if *reportRSS {
		res.PeakRSS = peakRSS()
	}
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
	if !res.Accounted {
		os.Exit(1)
	}
}

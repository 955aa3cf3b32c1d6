// Command s3-server is the S3-compatible HTTP server of meterwax's tests and benchmark.
//
// It serves the S3 API from memory (the gofakes3 library) on a loopback port, with the
// buckets named by -bucket created at start. It prints one line, "listening on HOST:PORT",
// once it accepts connections, so a caller that passes -addr 127.0.0.1:0 learns the free
// port the kernel chose. It stops on SIGTERM or SIGINT, or when its stdin closes (so a
// test run that dies without stopping it does not leave it behind).
//
// Conditional writes: like Amazon S3, MinIO and R2, the store answers 412 Precondition
// Failed to a PUT with "If-None-Match: *" on a key that exists, atomically with respect to
// other PUTs. delta-rs commits a table version with exactly such a PUT, so two writers
// racing for one version see exactly one win. -no-conditional-put makes the server behave
// like a store without that support: it drops the conditional headers and overwrites, so
// that meterwax's refusal to write to such a store can be tested.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

func main() {
	if err := run(); err != nil {
		log.Fatalf("s3-server: %v", err)
	}
}

func run() error {
	addr := flag.String("addr", "127.0.0.1:0", "HOST:PORT to listen on (port 0: a free port)")
	buckets := flag.String("bucket", "lake", "comma-separated buckets to create at start")
	noConditional := flag.Bool("no-conditional-put", false,
		"ignore If-None-Match and If-Match on PUT (a store without conditional writes)")
	watchStdin := flag.Bool("exit-on-stdin-close", true, "stop when stdin reaches its end")
	verbose := flag.Bool("verbose", false, "log every request to stderr")
	flag.Parse()

	backend := s3mem.New()
	for _, name := range strings.Split(*buckets, ",") {
		if name = strings.TrimSpace(name); name == "" {
			continue
		}
		if err := backend.CreateBucket(name); err != nil {
			return fmt.Errorf("create bucket %q: %w", name, err)
		}
	}
	faker := gofakes3.New(backend, gofakes3.WithoutVersioning(), gofakes3.WithLogger(gofakes3.DiscardLog()))
	handler := faker.Server()
	if *noConditional {
		handler = withoutConditions(handler)
	}
	if *verbose {
		handler = logged(handler)
	}

	listener, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *addr, err)
	}
	server := &http.Server{Handler: handler, ReadHeaderTimeout: 30 * time.Second}
	if !*verbose {
		// gofakes3 writes an error status twice on some failed requests (a refused conditional
		// PUT among them); net/http logs each such "superfluous WriteHeader". Noise, not news.
		server.ErrorLog = log.New(io.Discard, "", 0)
	}
	failed := make(chan error, 1)
	go func() { failed <- server.Serve(listener) }()
	fmt.Printf("listening on %s\n", listener.Addr())

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	closed := make(chan struct{})
	if *watchStdin {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			close(closed)
		}()
	}
	select {
	case err := <-failed:
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	case <-stop:
	case <-closed:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return server.Shutdown(ctx)
}

// logged writes one line per request to stderr: method, path, conditional header, status.
func logged(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		recorder := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		condition := r.Header.Get("If-None-Match")
		next.ServeHTTP(recorder, r)
		log.Printf("%s %s if-none-match=%q -> %d", r.Method, r.URL.RequestURI(), condition, recorder.status)
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(status int) {
	s.status = status
	s.ResponseWriter.WriteHeader(status)
}

// withoutConditions strips the conditional-write headers from every PUT, so the store
// overwrites where S3 would answer 412: the behaviour of a store that lacks conditional put.
func withoutConditions(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			r.Header.Del("If-None-Match")
			r.Header.Del("If-Match")
		}
		next.ServeHTTP(w, r)
	})
}

package pgbus_test

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A real pgbusd on the throwaway Postgres that ctest's fixture started
// (PGBUS_TEST_PG_DIR, PGBUSD), one per test, each with a tenant of its own.

func env(t *testing.T) (pgbusd, pgDir string) {
	t.Helper()
	pgbusd, pgDir = os.Getenv("PGBUSD"), os.Getenv("PGBUS_TEST_PG_DIR")
	if pgbusd == "" || pgDir == "" {
		t.Fatal("run through ctest (make test): PGBUSD and PGBUS_TEST_PG_DIR are not set")
	}
	return pgbusd, pgDir
}

func dsn(pgDir, user string) string {
	return fmt.Sprintf("host=%s/run dbname=pgbus user=%s", pgDir, user)
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type server struct {
	t      *testing.T
	Target string
	Tenant string
	auth   bool
	args   []string // more flags
	cmd    *exec.Cmd
	log    string
}

func randomName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// startServer runs pgbusd in dev mode with a tenant of its own, or with
// API keys checked when auth; args are more flags (TLS files, say).
func startServer(t *testing.T, auth bool, args ...string) *server {
	t.Helper()
	s := &server{t: t, Tenant: randomName("go-"), auth: auth, args: args,
		Target: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		log:    t.TempDir() + "/pgbusd.log"}
	s.start()
	t.Cleanup(func() { s.stop(syscall.SIGKILL) })
	return s
}

func (s *server) start() {
	pgbusd, pgDir := env(s.t)
	args := append([]string{"serve", "--listen", s.Target, "--poll-interval-ms", "100"}, s.args...)
	if !s.auth {
		args = append(args, "--dev-mode", "--default-tenant", s.Tenant)
	}
	log, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	s.cmd = exec.Command(pgbusd, args...)
	s.cmd.Env = append(os.Environ(), "PGBUS_DATABASE_URL="+dsn(pgDir, "pgbus_app"))
	s.cmd.Stdout, s.cmd.Stderr = log, log
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		if c, err := net.DialTimeout("tcp", s.Target, 100*time.Millisecond); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("pgbusd did not start; log: %s", s.log)
}

func (s *server) stop(sig syscall.Signal) {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(sig)
	_ = s.cmd.Wait()
	s.cmd = nil
}

// operator runs `pgbusd <args>` with the schema owner's connection; stdout.
func operator(t *testing.T, args ...string) string {
	t.Helper()
	pgbusd, pgDir := env(t)
	cmd := exec.Command(pgbusd, args...)
	cmd.Env = append(os.Environ(), "PGBUS_DATABASE_URL="+dsn(pgDir, "pgbus_owner"))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("pgbusd %v: %v", args, err)
	}
	return strings.TrimSpace(string(out))
}

// sql runs a statement as the schema owner with the tenant set; the last
// line of its output.
func sql(t *testing.T, tenant, statement string) string {
	t.Helper()
	_, pgDir := env(t)
	cmd := exec.Command("psql", dsn(pgDir, "pgbus_owner"), "-qAtX", "-v", "ON_ERROR_STOP=1")
	cmd.Stdin = strings.NewReader(fmt.Sprintf(
		"SELECT set_config('pgbus.tenant_id', '%s', false);\n%s", tenant, statement))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("psql: %v: %s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) < 2 {
		return ""
	}
	return lines[len(lines)-1]
}

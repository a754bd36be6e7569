package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"go.yaml.in/yaml/v3"
)

// Docker cannot run here, so these tests check the deployment files against
// the code they run: compose.yaml's gateway command lines against serve's
// real flag set, its NATS services against nats.conf (parsed by
// nats-server's own parser), the image versions against go.mod.

// composeFile is the part of compose.yaml the tests read.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image       string            `yaml:"image"`
	Build       any               `yaml:"build"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Ports       []string          `yaml:"ports"`
	Volumes     []string          `yaml:"volumes"`
	Hostname    string            `yaml:"hostname"`
	DependsOn   map[string]any    `yaml:"depends_on"`
}

func readCompose(t *testing.T) composeFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	return c
}

// composeVar matches a compose interpolation: ${NAME}, ${NAME:-default},
// ${NAME:?message}.
var composeVar = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}`)

// interpolate replaces compose variables by a placeholder value, as an
// operator's .env would.
func interpolate(s string) string {
	return composeVar.ReplaceAllString(s, "value-of-$1")
}

// goModVersion returns the version of module mod in go.mod ("go" for the
// go directive).
func goModVersion(t *testing.T, mod string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(mod) + `\s+v?(\S+)`)
	m := re.FindSubmatch(b)
	if m == nil {
		t.Fatalf("%s not in go.mod", mod)
	}
	return string(m[1])
}

// majorMinor cuts "2.15.2" to "2.15".
func majorMinor(v string) string {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return v
	}
	return parts[0] + "." + parts[1]
}

// TestComposeGateways checks every gateway of compose.yaml: its command is
// `jetchat serve` with flags that serve's real flag set accepts, its
// JETCHAT_* variables name real flags, and the values make a cluster: all
// three NATS services, --replicas 3, ownership enforced, a unique gateway
// id, a public URL on its published port, Postgres from the compose file.
func TestComposeGateways(t *testing.T) {
	t.Parallel()
	c := readCompose(t)
	var gateways []string
	for name, s := range c.Services {
		if s.Build != nil || strings.HasPrefix(s.Image, "jetchat") {
			gateways = append(gateways, name)
		}
	}
	slices.Sort(gateways)
	if !slices.Equal(gateways, []string{"gw-1", "gw-2", "gw-3"}) {
		t.Fatalf("gateway services %v, want gw-1, gw-2, gw-3", gateways)
	}
	natsServices := natsServiceNames(c)
	ids := map[string]bool{}
	for _, name := range gateways {
		s := c.Services[name]
		if len(s.Command) == 0 || s.Command[0] != "serve" {
			t.Errorf("%s: command %q, want jetchat serve ...", name, s.Command)
			continue
		}
		args := make([]string, len(s.Command)-1)
		for i, a := range s.Command[1:] {
			args[i] = interpolate(a)
		}
		env := map[string]string{}
		for k, v := range s.Environment {
			env[k] = interpolate(v)
		}
		fs, f := serveFlagSet(io.Discard)
		for k := range env {
			if strings.HasPrefix(k, "JETCHAT_") && !slices.ContainsFunc(flagNames(fs), func(n string) bool { return envName(n) == k }) {
				t.Errorf("%s: environment %s names no serve flag", name, k)
			}
		}
		if err := parse(fs, args, func(k string) string { return env[k] }); err != nil {
			t.Errorf("%s: serve %q: %v", name, args, err)
			continue
		}
		var hosts []string
		for _, u := range strings.Split(f.natsURL, ",") {
			host, port, ok := strings.Cut(strings.TrimPrefix(strings.TrimSpace(u), "nats://"), ":")
			if !ok || port != "4222" {
				t.Errorf("%s: --nats-url entry %q, want nats://<service>:4222", name, u)
			}
			hosts = append(hosts, host)
		}
		slices.Sort(hosts)
		if !slices.Equal(hosts, natsServices) {
			t.Errorf("%s: --nats-url %q names %v, want every NATS service %v", name, f.natsURL, hosts, natsServices)
		}
		if f.replicas != 3 {
			t.Errorf("%s: --replicas %d, want 3", name, f.replicas)
		}
		if !f.enforce {
			t.Errorf("%s: ownership is not enforced", name)
		}
		if f.gatewayID != name || ids[f.gatewayID] {
			t.Errorf("%s: --gateway-id %q, want the service name (unique)", name, f.gatewayID)
		}
		ids[f.gatewayID] = true
		_, port, err := net.SplitHostPort(f.httpAddr)
		if err != nil {
			t.Errorf("%s: --http %q: %v", name, f.httpAddr, err)
		}
		want := ""
		for _, p := range s.Ports {
			if hostPort, ctrPort, ok := strings.Cut(p, ":"); ok && ctrPort == port {
				want = "ws://localhost:" + hostPort + "/v1/ws"
			}
		}
		if want == "" || f.publicURL != want {
			t.Errorf("%s: --public-url %q with ports %v, want %q (the published port of --http %s)", name, f.publicURL, s.Ports, want, f.httpAddr)
		}
		if f.svc.natsUser != "jetchat" || f.svc.natsPassword == "" {
			t.Errorf("%s: connects to NATS as %q (password set: %v), want nats.conf's jetchat user", name, f.svc.natsUser, f.svc.natsPassword != "")
		}
		if db := env["DATABASE_URL"]; !strings.Contains(db, "@postgres:5432/") {
			t.Errorf("%s: DATABASE_URL %q, want the postgres service", name, db)
		} else if _, ok := c.Services["postgres"]; !ok {
			t.Errorf("no postgres service")
		}
		for _, dep := range append(slices.Clone(natsServices), "postgres") {
			if _, ok := s.DependsOn[dep]; !ok {
				t.Errorf("%s does not depend on %s", name, dep)
			}
		}
	}
	if pg := c.Services["postgres"]; !strings.HasPrefix(pg.Image, "postgres:") {
		t.Errorf("postgres image %q, want the official postgres image", pg.Image)
	}
}

// flagNames lists the names of fs's flags.
func flagNames(fs *flag.FlagSet) []string {
	var out []string
	fs.VisitAll(func(f *flag.Flag) { out = append(out, f.Name) })
	return out
}

// natsServiceNames lists the services that run nats-server.
func natsServiceNames(c composeFile) []string {
	var out []string
	for name, s := range c.Services {
		if strings.HasPrefix(s.Image, "nats:") {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// TestComposeNATS checks the NATS services: the official image of the
// nats-server version in go.mod, nats.conf mounted and used, the node name
// and store folder nats.conf expects, every password it reads, and that
// nats.conf (parsed by nats-server's own parser with that environment)
// routes to exactly these services.
func TestComposeNATS(t *testing.T) {
	c := readCompose(t)
	names := natsServiceNames(c)
	if !slices.Equal(names, []string{"nats-1", "nats-2", "nats-3"}) {
		t.Fatalf("NATS services %v, want nats-1, nats-2, nats-3", names)
	}
	wantImage := "nats:" + majorMinor(goModVersion(t, "github.com/nats-io/nats-server/v2")) + "-alpine"
	needs := natsConfEnv(t)
	for _, name := range names {
		s := c.Services[name]
		if s.Image != wantImage {
			t.Errorf("%s: image %q, want %q (the nats-server of go.mod)", name, s.Image, wantImage)
		}
		i := slices.IndexFunc(s.Command, func(a string) bool { return a == "-c" || a == "--config" })
		if i < 0 || i+1 >= len(s.Command) {
			t.Errorf("%s: command %q does not load a config file", name, s.Command)
			continue
		}
		conf := s.Command[i+1]
		if !slices.ContainsFunc(s.Volumes, func(v string) bool { return strings.HasPrefix(v, "./nats.conf:"+conf) }) {
			t.Errorf("%s: %s is not the repository's nats.conf (volumes %v)", name, conf, s.Volumes)
		}
		if got := s.Environment["NATS_SERVER_NAME"]; got != name || s.Hostname != name {
			t.Errorf("%s: NATS_SERVER_NAME %q, hostname %q, want both %q", name, got, s.Hostname, name)
		}
		store := s.Environment["NATS_STORE_DIR"]
		if store == "" || !slices.ContainsFunc(s.Volumes, func(v string) bool { return strings.HasSuffix(v, ":"+store) }) {
			t.Errorf("%s: NATS_STORE_DIR %q is not on a volume (%v)", name, store, s.Volumes)
		}
		for k := range needs {
			if s.Environment[k] == "" {
				t.Errorf("%s: nats.conf reads $%s, which the service's environment does not set", name, k)
			}
		}
	}

	// nats.conf as nats-1 would read it.
	for k, v := range c.Services["nats-1"].Environment {
		t.Setenv(k, interpolate(v))
	}
	opts, err := server.ProcessConfigFile(filepath.Join(repoRoot(t), "nats.conf"))
	if err != nil {
		t.Fatalf("nats.conf: %v", err)
	}
	if opts.ServerName != "nats-1" || !opts.JetStream || opts.StoreDir != c.Services["nats-1"].Environment["NATS_STORE_DIR"] {
		t.Errorf("nats.conf: server %q, jetstream %v, store %q", opts.ServerName, opts.JetStream, opts.StoreDir)
	}
	if !opts.SyncAlways {
		t.Errorf("nats.conf does not fsync every write")
	}
	if opts.Cluster.Name == "" || opts.Cluster.Port != 6222 {
		t.Errorf("nats.conf: cluster %q on port %d", opts.Cluster.Name, opts.Cluster.Port)
	}
	var routes []string
	for _, r := range opts.Routes {
		if r.Port() != "6222" {
			t.Errorf("nats.conf: route %s, want port 6222", r)
		}
		routes = append(routes, r.Hostname())
	}
	slices.Sort(routes)
	if !slices.Equal(routes, names) {
		t.Errorf("nats.conf routes to %v, want the compose services %v", routes, names)
	}
}

// TestComposeSecrets: every variable compose.yaml requires is one that
// scripts/compose-env.sh writes.
func TestComposeSecrets(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	script, err := os.ReadFile(filepath.Join(repoRoot(t), "scripts", "compose-env.sh"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range composeVar.FindAllSubmatch(b, -1) {
		if !regexp.MustCompile(`\b` + string(m[1]) + `\b`).Match(script) {
			t.Errorf("compose.yaml needs $%s, which scripts/compose-env.sh does not write", m[1])
		}
	}
}

// TestDockerfile: the build stage uses the Go of go.mod, and the image
// runs jetchat.
func TestDockerfile(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("FROM golang:%s-", majorMinor(goModVersion(t, "go")))
	if !strings.Contains(string(b), want) {
		t.Errorf("Dockerfile does not build with %q...", want)
	}
	if !strings.Contains(string(b), `ENTRYPOINT ["jetchat"]`) {
		t.Errorf(`Dockerfile's entry point is not ["jetchat"] (compose.yaml's commands start with serve)`)
	}
}

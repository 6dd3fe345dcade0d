package plugin

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-connections/tlsconfig"
	"github.com/sirupsen/logrus"
)

// writePKI makes a CA and a cert it signs for 127.0.0.1 with server and
// client auth, as dockerd uses one cert both ways; returns ca, cert, key.
func writePKI(t *testing.T, dir, prefix string) (string, string, string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: prefix + "-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTpl, caTpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "stowage"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	write := func(name, typ string, b []byte) string {
		p := filepath.Join(dir, prefix+"-"+name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("cert.pem", "CERTIFICATE", der), write("key.pem", "EC PRIVATE KEY", kb)
}

func TestTLSListenerRequiresClientCertAndSpecIsDockersFormat(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key := writePKI(t, dir, "a")
	if _, err := ListenTLS("127.0.0.1:0", TLSOptions{Cert: cert, Key: key}); err == nil {
		t.Fatal("ListenTLS without a CA succeeded: TCP must require client certificates")
	}
	l, err := ListenTLS("127.0.0.1:0", TLSOptions{Cert: cert, Key: key, CA: ca})
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(NewHandler(nil, HandlerOptions{Log: logrus.New()}), logrus.New())
	go srv.Serve(l)
	defer srv.Shutdown(time.Second)
	url := "https://" + l.Addr().String() + "/Plugin.Activate"

	spec, err := WriteSpec(dir, Spec{Name: "stw", Addr: "https://" + l.Addr().String(), TLSConfig: &SpecTLS{CAFile: ca, CertFile: cert, KeyFile: key}})
	if err != nil {
		t.Fatal(err)
	}
	// Read the spec as dockerd would, and call with what it names.
	var got struct {
		Name, Addr string
		TLSConfig  tlsconfig.Options
	}
	b, _ := os.ReadFile(spec)
	if err := json.Unmarshal(b, &got); err != nil || got.Addr != "https://"+l.Addr().String() || got.TLSConfig.CAFile != ca {
		t.Fatalf("spec %s = %s (%v)", spec, b, err)
	}
	cfg, err := tlsconfig.Client(got.TLSConfig)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 5 * time.Second}
	resp, err := c.Post(url, "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("activate over TLS: %s", resp.Status)
	}

	// Without a client certificate, or with one of another CA: refused.
	noCert, _ := tlsconfig.Client(tlsconfig.Options{CAFile: ca})
	_, otherCert, otherKey := writePKI(t, dir, "b")
	wrongCA, _ := tlsconfig.Client(tlsconfig.Options{CAFile: ca, CertFile: otherCert, KeyFile: otherKey})
	for name, cfg := range map[string]interface{}{"no client cert": noCert, "foreign client cert": wrongCA} {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg.(*tls.Config)}, Timeout: 5 * time.Second}
		if resp, err := c.Post(url, "application/json", nil); err == nil {
			resp.Body.Close()
			t.Errorf("%s: request accepted (%s)", name, resp.Status)
		}
	}
	if _, err := WriteSpec(dir, Spec{Name: "../x"}); err == nil || !strings.Contains(err.Error(), "cannot name") {
		t.Errorf("WriteSpec with a path name: %v", err)
	}
}

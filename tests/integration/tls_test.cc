// TLS and mutual TLS with throwaway certificates made by OpenSSL when the
// test runs (no key is committed).
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/support/harness.h"

namespace pgbus {
namespace {

using testing::Pgbusd;
using testing::UniqueName;

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A CA, a server certificate for 127.0.0.1 / localhost, client certificates
// (common names given) signed by it, and one signed by an unrelated CA.
class Certs {
 public:
  explicit Certs(const std::vector<std::string>& client_names) {
    dir_ = absl::StrCat(::testing::TempDir(), "/", UniqueName("certs"));
    Run(absl::StrCat("mkdir -p ", dir_));
    MakeCa("ca");
    MakeCa("other-ca");
    Sign("ca", "server", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1");
    for (const auto& name : client_names) {
      Sign("ca", "client-" + name, name, "extendedKeyUsage=clientAuth");
    }
    Sign("other-ca", "stranger", client_names.empty() ? "stranger" : client_names[0],
         "extendedKeyUsage=clientAuth");
  }
  std::string Path(const std::string& file) const { return dir_ + "/" + file; }
  std::string Pem(const std::string& file) const { return Slurp(Path(file)); }

  // TLS credentials trusting our CA, with a client certificate if named.
  std::shared_ptr<grpc::ChannelCredentials> Credentials(const std::string& client = "") const {
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = Pem("ca.pem");
    if (!client.empty()) {
      o.pem_cert_chain = Pem(client + ".pem");
      o.pem_private_key = Pem(client + ".key");
    }
    return grpc::SslCredentials(o);
  }

 private:
  void Run(const std::string& cmd) {
    if (std::system(("(" + cmd + ") >/dev/null 2>&1").c_str()) != 0) {
      throw std::runtime_error("failed: " + cmd);
    }
  }
  void MakeCa(const std::string& name) {
    Run(absl::StrCat("cd ", dir_, " && openssl req -x509 -newkey ec -pkeyopt "
                     "ec_paramgen_curve:prime256v1 -nodes -days 1 -keyout ", name, ".key -out ",
                     name, ".pem -subj /CN=pgbus-test-", name));
  }
  void Sign(const std::string& ca, const std::string& name, const std::string& cn,
            const std::string& ext) {
    std::ofstream(Path(name + ".ext")) << ext << "\n";
    Run(absl::StrCat("cd ", dir_, " && openssl req -newkey ec -pkeyopt "
                     "ec_paramgen_curve:prime256v1 -nodes -keyout ", name, ".key -out ", name,
                     ".csr -subj /CN=", cn, " && openssl x509 -req -days 1 -in ", name,
                     ".csr -CA ", ca, ".pem -CAkey ", ca, ".key -CAcreateserial -out ", name,
                     ".pem -extfile ", name, ".ext"));
  }
  std::string dir_;
};

std::unique_ptr<Client> Connect(const Pgbusd& server,
                                std::shared_ptr<grpc::ChannelCredentials> creds) {
  ClientOptions o;
  o.credentials = std::move(creds);
  return Client::Connect(server.target(), o);
}

TEST(Tls, ServesTlsAndRefusesPlaintext) {
  Certs certs({});
  Pgbusd server({"--tls-cert-file", certs.Path("server.pem"), "--tls-key-file",
                 certs.Path("server.key")});
  EXPECT_TRUE(absl::StrContains(server.Log(), "tls=on")) << server.Log();
  auto client = Connect(server, certs.Credentials());
  EXPECT_TRUE(client->CreateTopic("t").ok());
  EXPECT_TRUE(client->Publish("t", "over tls").ok());
  auto plain = server.Connect();
  EXPECT_EQ(plain->CreateTopic("u").status().code(), absl::StatusCode::kUnavailable);
  // A client that does not trust the server's CA refuses it.
  grpc::SslCredentialsOptions other;
  other.pem_root_certs = certs.Pem("other-ca.pem");
  EXPECT_EQ(Connect(server, grpc::SslCredentials(other))->CreateTopic("u").status().code(),
            absl::StatusCode::kUnavailable);
}

TEST(Tls, MutualTlsNeedsACertificateFromTheClientCa) {
  Certs certs({"alice"});
  Pgbusd server({"--tls-cert-file", certs.Path("server.pem"), "--tls-key-file",
                 certs.Path("server.key"), "--tls-client-ca-file", certs.Path("ca.pem")});
  EXPECT_TRUE(absl::StrContains(server.Log(), "tls=mutual")) << server.Log();
  EXPECT_TRUE(Connect(server, certs.Credentials("client-alice"))->CreateTopic("t").ok());
  EXPECT_EQ(Connect(server, certs.Credentials())->CreateTopic("u").status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(Connect(server, certs.Credentials("stranger"))->CreateTopic("u").status().code(),
            absl::StatusCode::kUnavailable);
}

TEST(Tls, ACertificateCanNameTheTenant) {
  std::string tenant = UniqueName("tenant");
  ASSERT_EQ(testing::RunPgbusd({"tenant", "create", tenant}).exit_code, 0);
  Certs certs({tenant, "nobody"});
  Pgbusd server({"--dev-mode=false", "--tls-cert-file", certs.Path("server.pem"),
                 "--tls-key-file", certs.Path("server.key"), "--tls-client-ca-file",
                 certs.Path("ca.pem"), "--tls-client-tenant-from-cert"});
  auto client = Connect(server, certs.Credentials("client-" + tenant));
  ASSERT_TRUE(client->CreateTopic("by-cert").ok());
  EXPECT_TRUE(client->Publish("by-cert", "x").ok());
  EXPECT_EQ(testing::CountAsOwner(tenant, "SELECT 1 FROM pgbus.messages"), 1);
  // A verified certificate whose name is no tenant gets nothing.
  auto st = Connect(server, certs.Credentials("client-nobody"))->CreateTopic("x").status();
  EXPECT_EQ(st.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(absl::StrContains(st.message(), "names no tenant")) << st;
}

TEST(Tls, BadSettingsStopStartUp) {
  Certs certs({});
  for (const std::vector<std::string>& flags :
       {std::vector<std::string>{"--tls-cert-file", certs.Path("server.pem")},
        std::vector<std::string>{"--tls-cert-file", certs.Path("server.pem"), "--tls-key-file",
                                 certs.Path("missing.key")},
        std::vector<std::string>{"--tls-client-tenant-from-cert"}}) {
    EXPECT_THROW(Pgbusd server(flags), std::runtime_error) << flags[0];
  }
}

}  // namespace
}  // namespace pgbus

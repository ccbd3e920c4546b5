#include "rsio/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cstring>

#include "common/assert.h"

namespace rsio::auth {

namespace {

constexpr std::string_view kClientLabel = "rsio-v1 client";
constexpr std::string_view kServerLabel = "rsio-v1 server";

Digest hmac(std::string_view key, std::span<const std::span<const uint8_t>> parts) {
  Digest out{};
  std::array<uint8_t, 512> msg{};
  size_t n = 0;
  for (auto p : parts) {
    RSIO_ASSERT(n + p.size() <= msg.size());
    std::memcpy(msg.data() + n, p.data(), p.size());
    n += p.size();
  }
  unsigned int len = 0;
  const unsigned char* res =
      HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), msg.data(), n, out.data(), &len);
  RSIO_ASSERT(res != nullptr && len == out.size());
  return out;
}

std::span<const uint8_t> bytes_of(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace

bool random_bytes(std::span<uint8_t> out) {
  return RAND_bytes(out.data(), static_cast<int>(out.size())) == 1;
}

Transcript::Transcript() : ctx_(EVP_MD_CTX_new()) {
  RSIO_ASSERT(ctx_ != nullptr);
  RSIO_ASSERT(EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), EVP_sha256(), nullptr) == 1);
}

Transcript::~Transcript() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_)); }

void Transcript::add(std::span<const uint8_t> bytes) {
  RSIO_ASSERT(EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), bytes.data(), bytes.size()) == 1);
}

Digest Transcript::finish() {
  Digest d{};
  unsigned int len = 0;
  RSIO_ASSERT(EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), d.data(), &len) == 1);
  return d;
}

Digest client_proof(std::string_view node_key, const Digest& transcript) {
  const std::span<const uint8_t> parts[] = {bytes_of(kClientLabel), transcript};
  return hmac(node_key, parts);
}

Digest server_proof(std::string_view node_key, const Digest& transcript,
                    const Digest& client_proof) {
  const std::span<const uint8_t> parts[] = {bytes_of(kServerLabel), transcript, client_proof};
  return hmac(node_key, parts);
}

bool equal(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace rsio::auth

// The handshake's cryptography (docs/wire-protocol.md §3): nonces, the transcript hash and
// the two HMAC-SHA256 proofs keyed by the node key. OpenSSL does the primitives.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string_view>

#include "rsio/wire.h"

namespace rsio::auth {

using Nonce = std::array<uint8_t, wire::kNonceBytes>;
using Digest = std::array<uint8_t, 32>;

// Fills `out` from the OS's CSPRNG. Returns false when no randomness is available.
bool random_bytes(std::span<uint8_t> out);

// Incremental SHA-256 of the handshake transcript (HELLO frame, then the HELLO reply frame).
class Transcript {
 public:
  Transcript();
  ~Transcript();
  Transcript(const Transcript&) = delete;
  Transcript& operator=(const Transcript&) = delete;
  void add(std::span<const uint8_t> bytes);
  Digest finish();

 private:
  void* ctx_;  // EVP_MD_CTX
};

Digest client_proof(std::string_view node_key, const Digest& transcript);
Digest server_proof(std::string_view node_key, const Digest& transcript,
                    const Digest& client_proof);

// Constant-time comparison of two proofs.
bool equal(std::span<const uint8_t> a, std::span<const uint8_t> b);

}  // namespace rsio::auth

#include <vector>
#include <cstdint>

template <typename T>
static inline T clamp(T v, T lo, T hi) { return v < lo ? lo : (v > hi ? hi : v); }

int main(int argc, char** argv) {
  std::vector<uint64_t> xs{1ull << 63, 0xDEADBEEF, 42};
  for (auto& x : xs) x ^= (x >> 17) & ~0u;  // mix
  if (argc > 1 && argv[1][0] == '-') return -1;
  /* block
     comment */
  return static_cast<int>(xs.size()) != 3;
}

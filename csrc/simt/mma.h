// nvcuda::wmma for the emulated build (SIMT.md 6). The toolkit's <mma.h> defines nothing under
// g++; csrc/simt comes first on the emulated include path, so a kernel's `#include <mma.h>`
// lands here and sees the same names as under nvcc.
//
// A fragment holds the WHOLE tile in every lane (num_elements = rows * cols, row-major in x[]).
// CUDA leaves the element-to-lane mapping unspecified, so portable kernels only apply the same
// element-wise code in every lane, which stays correct under replication; strict mode checks
// that every lane hands mma_sync / store_matrix_sync bit-identical fragments, so lane-dependent
// fragment code is reported rather than silently "working".
//
// fill_fragment, load_matrix_sync, mma_sync and store_matrix_sync are warp collectives: all 32
// lanes must call the same operation with the same pointer, ldm and layout (else an error names
// both lanes). The operation runs once, when the last lane arrives (eager completion, before any
// other thread runs: a tile loaded without the barrier that should precede it sees
// schedule-dependent data), on the first lane's fragments; the result is copied to every lane.
// CUDA's preconditions are checked: pointer 256-bit aligned, ldm a multiple of 16 bytes.
//
// Arithmetic: mma_sync multiplies exactly and accumulates in double, rounding once to float
// (D = fl32(C + sum_k A*B)). Real tensor cores truncate partial sums, so a GPU may differ in the
// last bits: compare with a tolerance. tf32 operands use only their top 19 bits (the low 13
// mantissa bits are ignored, as by the hardware); __float_to_tf32 rounds to nearest, ties away
// from zero (PTX cvt.rna.tf32.f32).
// Shapes: m16n16k16, m32n8k16, m8n32k16 for __half and __nv_bfloat16; m16n16k8 for
// precision::tf32; float accumulators only (a __half accumulator is a compile error).
#pragma once
#include <cstring>
#include <type_traits>

#include "builtins.h"
#include "fp16.h"

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };
namespace precision {
struct tf32 {};
}  // namespace precision

// PTX cvt.rna.tf32.f32: round to 10 mantissa bits, to nearest, ties away from zero; the result
// is a float whose low 13 bits are zero. Infinities and NaN pass through (NaN stays NaN).
inline float __float_to_tf32(float in) {
  uint32_t bits;
  std::memcpy(&bits, &in, 4);
  if ((bits & 0x7f800000u) != 0x7f800000u) bits = (bits + 0x1000u) & 0xffffe000u;
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

namespace detail {

template <typename T>
struct identity {  // std::type_identity (C++20): keeps a parameter out of deduction
  using type = T;
};

template <typename T>
struct storage {
  using type = T;
};
template <>
struct storage<precision::tf32> {
  using type = float;
};

template <typename Use, int m, int n, int k>
struct extent;
template <int m, int n, int k>
struct extent<matrix_a, m, n, k> {
  static constexpr int rows = m, cols = k;
};
template <int m, int n, int k>
struct extent<matrix_b, m, n, k> {
  static constexpr int rows = k, cols = n;
};
template <int m, int n, int k>
struct extent<accumulator, m, n, k> {
  static constexpr int rows = m, cols = n;
};

template <int m, int n, int k>
constexpr bool half_shape = k == 16 && ((m == 16 && n == 16) || (m == 32 && n == 8) ||
                                        (m == 8 && n == 32));
template <int m, int n, int k>
constexpr bool tf32_shape = m == 16 && n == 16 && k == 8;

template <typename Use, int m, int n, int k, typename T, typename Layout>
constexpr bool supported() {
  if constexpr (std::is_same_v<Use, accumulator>) {
    return std::is_same_v<T, float> && std::is_void_v<Layout> &&
           (half_shape<m, n, k> || tf32_shape<m, n, k>);
  } else {
    constexpr bool layout = std::is_same_v<Layout, row_major> || std::is_same_v<Layout, col_major>;
    if constexpr (std::is_same_v<T, precision::tf32>) return layout && tf32_shape<m, n, k>;
    return layout && (std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>) &&
           half_shape<m, n, k>;
  }
}

}  // namespace detail

template <typename Use, int m, int n, int k, typename T, typename Layout = void>
class fragment {
  static_assert(detail::supported<Use, m, n, k, T, Layout>(),
                "simt: this nvcuda::wmma fragment is not emulated (csrc/simt/mma.h: __half and "
                "__nv_bfloat16 m16n16k16/m32n8k16/m8n32k16, tf32 m16n16k8, float accumulators; "
                "matrix_a/b need row_major or col_major, accumulators no layout)");

 public:
  using element_type = T;
  using storage_element_type = typename detail::storage<T>::type;
  static constexpr int num_rows = detail::extent<Use, m, n, k>::rows;
  static constexpr int num_cols = detail::extent<Use, m, n, k>::cols;
  static constexpr int num_elements = num_rows * num_cols;
  storage_element_type x[num_elements];  // the whole tile, row-major (see the file comment)
};

}  // namespace wmma
}  // namespace nvcuda

namespace simt {
namespace wmma_detail {

enum class Kind : uint8_t { Fill, Load, Store, Mma };

// One lane's arrival at a WMMA collective (on its stack while it waits).
struct Call : CustomCollective {
  Kind kind;
  void (*run)(const Call& c);  // does the operation on this lane's fragments; also a type tag
  const void* ptr = nullptr;   // memory of a load or store
  unsigned ldm = 0;
  int col_major = 0;
  uint64_t fill_bits = 0;
  void* out = nullptr;  // this lane's result fragment
  size_t out_bytes = 0;
  const void* in[3] = {nullptr, nullptr, nullptr};  // this lane's input fragments
  size_t in_bytes[3] = {0, 0, 0};
};

inline const char* kind_name(Kind k) {
  return k == Kind::Fill ? "nvcuda::wmma::fill_fragment" : k == Kind::Load ? "nvcuda::wmma::load_matrix_sync"
         : k == Kind::Store ? "nvcuda::wmma::store_matrix_sync" : "nvcuda::wmma::mma_sync";
}

inline std::string args_str(const Call& c) {
  char s[96];
  if (c.kind == Kind::Load || c.kind == Kind::Store)
    std::snprintf(s, sizeof s, "(ptr %p, ldm %u, %s)", c.ptr, c.ldm,
                  c.col_major ? "col-major" : "row-major");
  else if (c.kind == Kind::Fill)
    std::snprintf(s, sizeof s, "(value bits 0x%llx)", static_cast<unsigned long long>(c.fill_bits));
  else
    std::snprintf(s, sizeof s, "()");
  return s;
}

inline const Call& call_of(const Thread& t) { return static_cast<const Call&>(custom_of(t)); }

// CustomCollective::complete for every WMMA operation.
inline void complete(BlockRun& b, unsigned w, unsigned group) {
  Thread* lanes = &b.threads[w * 32];
  const Thread& t0 = lanes[__builtin_ctz(group)];
  const Call& first = call_of(t0);
  const std::string where = std::string(kind_name(first.kind)) + " at " + site_str(t0.site) +
                            " in warp " + std::to_string(w) + ": ";
  const unsigned present = std::min(32u, b.nthreads - w * 32);
  if (present < 32)
    throw Error("simt: " + where + "needs all 32 lanes of a warp, but the warp has only " +
                std::to_string(present) + " threads (block size not a multiple of 32)");
  if (group != 0xffffffffu) {
    const unsigned missing = __builtin_ctz(~group);
    throw Error("simt: " + where + "needs all 32 lanes of the warp, but lane " +
                std::to_string(missing) + " has exited (mask of lanes that took part " +
                hex(group) + ")");
  }
  for (unsigned l = 0; l < 32; ++l) {
    const Call& c = call_of(lanes[l]);
    if (c.complete != first.complete || c.kind != first.kind || c.run != first.run ||
        c.ptr != first.ptr || c.ldm != first.ldm || c.col_major != first.col_major ||
        c.fill_bits != first.fill_bits)
      throw Error("simt: WMMA warp collective mismatch in warp " + std::to_string(w) +
                  " (all 32 lanes must make the same call): " + thread_str(t0) + " at " +
                  kind_name(first.kind) + args_str(first) + " " + site_str(t0.site) + ", " +
                  thread_str(lanes[l]) + " at " + kind_name(c.kind) + args_str(c) + " " +
                  site_str(lanes[l].site));
    for (int i = 0; i < 3; ++i) {
      if (!first.in[i] || std::memcmp(c.in[i], first.in[i], first.in_bytes[i]) == 0) continue;
      const std::string msg =
          where + "lane " + std::to_string(l) + " holds a different fragment (operand " +
          std::to_string(i) + ") than lane " + std::to_string(t0.tid % 32) +
          ": fragment code that differs between lanes depends on CUDA's unspecified "
          "element-to-lane mapping";
      if (config().strict) throw Error("simt: " + msg);
      warn(msg + "; using lane " + std::to_string(t0.tid % 32) + "'s");
      break;
    }
  }
  first.run(first);
  if (first.out)
    for (unsigned l = 0; l < 32; ++l) {
      const Call& c = call_of(lanes[l]);
      if (&c != &first) std::memcpy(c.out, first.out, first.out_bytes);
    }
}

inline void arrive(Call& c, Site site) {
  c.name = kind_name(c.kind);
  c.complete = &complete;
  const uint64_t self = reinterpret_cast<uintptr_t>(&c);
  warp_arrive(WarpOp::Custom, 0xffffffffu, 32, 0, &self, 8, site, /*eager=*/true);
}

inline std::string ptr_str(const void* p) {
  char s[32];
  std::snprintf(s, sizeof s, "%p", p);
  return s;
}

// CUDA's documented preconditions of load/store_matrix_sync.
inline void check_memory(Kind kind, const void* p, unsigned ldm, size_t elem, Site site) {
  const std::string where = std::string(kind_name(kind)) + " at " + site_str(site) + ": ";
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0)
    throw Error("simt: " + where + "expected a 256-bit (32-byte) aligned pointer, got " +
                ptr_str(p));
  if (ldm * elem % 16 != 0)
    throw Error("simt: " + where + "expected ldm a multiple of " + std::to_string(16 / elem) +
                " elements (16 bytes) for " + std::to_string(8 * elem) + "-bit elements, got " +
                std::to_string(ldm));
}

// The Call of a load or store at p with leading dimension ldm, once p and ldm are checked.
inline Call memory_call(Kind kind, void (*run)(const Call&), const void* p, unsigned ldm,
                        size_t elem, bool col_major, Site site) {
  check_memory(kind, p, ldm, elem, site);
  Call c;
  c.kind = kind;
  c.run = run;
  c.ptr = p;
  c.ldm = ldm;
  c.col_major = col_major;
  return c;
}

template <typename S>
double to_double(S v) {
  if constexpr (std::is_same_v<S, __half>) return __half2float(v);
  else if constexpr (std::is_same_v<S, __nv_bfloat16>) return __bfloat162float(v);
  else return v;
}

// An operand as the tensor core reads it: tf32 keeps the top 19 bits of the float.
template <typename T, typename S>
double operand(S v) {
  if constexpr (std::is_same_v<T, nvcuda::wmma::precision::tf32>) {
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    bits &= 0xffffe000u;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  } else {
    return to_double(v);
  }
}

template <typename F>
void run_fill(const Call& c) {
  typename F::storage_element_type v;
  std::memcpy(static_cast<void*>(&v), &c.fill_bits, sizeof v);
  auto* out = static_cast<typename F::storage_element_type*>(c.out);
  for (int i = 0; i < F::num_elements; ++i) out[i] = v;
}

template <typename F>
void run_load(const Call& c) {
  using S = typename F::storage_element_type;
  const S* p = static_cast<const S*>(c.ptr);
  S* out = static_cast<S*>(c.out);
  for (int r = 0; r < F::num_rows; ++r)
    for (int k = 0; k < F::num_cols; ++k)
      out[r * F::num_cols + k] = c.col_major ? p[size_t(k) * c.ldm + r] : p[size_t(r) * c.ldm + k];
}

template <typename F>
void run_store(const Call& c) {
  using S = typename F::storage_element_type;
  S* p = static_cast<S*>(const_cast<void*>(c.ptr));
  const S* in = static_cast<const S*>(c.in[0]);
  for (int r = 0; r < F::num_rows; ++r)
    for (int k = 0; k < F::num_cols; ++k)
      (c.col_major ? p[size_t(k) * c.ldm + r] : p[size_t(r) * c.ldm + k]) = in[r * F::num_cols + k];
}

template <typename D, typename A, typename B>
void run_mma(const Call& c) {
  using T = typename A::element_type;
  const auto* a = static_cast<const typename A::storage_element_type*>(c.in[0]);
  const auto* bm = static_cast<const typename B::storage_element_type*>(c.in[1]);
  const auto* acc = static_cast<const float*>(c.in[2]);
  constexpr int M = D::num_rows, N = D::num_cols, K = A::num_cols;
  float d[M * N];  // d may alias c: compute everything first
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      double s = acc[i * N + j];
      for (int k = 0; k < K; ++k) s += operand<T>(a[i * K + k]) * operand<T>(bm[k * N + j]);
      d[i * N + j] = static_cast<float>(s);
    }
  std::memcpy(c.out, d, sizeof d);
}

}  // namespace wmma_detail
}  // namespace simt

namespace nvcuda {
namespace wmma {

template <typename Use, int m, int n, int k, typename T, typename L>
void fill_fragment(fragment<Use, m, n, k, T, L>& f,
                   const typename fragment<Use, m, n, k, T, L>::storage_element_type& v,
                   SIMT_SITE) {
  namespace D = ::simt::wmma_detail;
  D::Call c;
  c.kind = D::Kind::Fill;
  c.run = &D::run_fill<fragment<Use, m, n, k, T, L>>;
  std::memcpy(&c.fill_bits, static_cast<const void*>(&v), sizeof v);
  c.out = f.x;
  c.out_bytes = sizeof f.x;
  D::arrive(c, SIMT_HERE);
}

template <typename Use, int m, int n, int k, typename T, typename L,
          typename = std::enable_if_t<!std::is_same_v<Use, accumulator>>>
void load_matrix_sync(fragment<Use, m, n, k, T, L>& f,
                      const typename fragment<Use, m, n, k, T, L>::storage_element_type* p,
                      unsigned ldm, SIMT_SITE) {
  namespace D = ::simt::wmma_detail;
  using F = fragment<Use, m, n, k, T, L>;
  D::Call c = D::memory_call(D::Kind::Load, &D::run_load<F>, p, ldm,
                             sizeof(typename F::storage_element_type),
                             std::is_same_v<L, col_major>, SIMT_HERE);
  c.out = f.x;
  c.out_bytes = sizeof f.x;
  D::arrive(c, SIMT_HERE);
}

template <int m, int n, int k, typename T>
void load_matrix_sync(fragment<accumulator, m, n, k, T>& f, const typename detail::identity<T>::type* p,
                      unsigned ldm, layout_t layout, SIMT_SITE) {
  namespace D = ::simt::wmma_detail;
  D::Call c = D::memory_call(D::Kind::Load, &D::run_load<fragment<accumulator, m, n, k, T>>, p,
                             ldm, sizeof(T), layout == mem_col_major, SIMT_HERE);
  c.out = f.x;
  c.out_bytes = sizeof f.x;
  D::arrive(c, SIMT_HERE);
}

template <int m, int n, int k, typename T>
void store_matrix_sync(typename detail::identity<T>::type* p, const fragment<accumulator, m, n, k, T>& f,
                       unsigned ldm, layout_t layout, SIMT_SITE) {
  namespace D = ::simt::wmma_detail;
  D::Call c = D::memory_call(D::Kind::Store, &D::run_store<fragment<accumulator, m, n, k, T>>, p,
                             ldm, sizeof(T), layout == mem_col_major, SIMT_HERE);
  c.in[0] = f.x;
  c.in_bytes[0] = sizeof f.x;
  D::arrive(c, SIMT_HERE);
}

template <int m, int n, int k, typename Tab, typename La, typename Lb, typename Tc>
void mma_sync(fragment<accumulator, m, n, k, Tc>& d, const fragment<matrix_a, m, n, k, Tab, La>& a,
              const fragment<matrix_b, m, n, k, Tab, Lb>& b,
              const fragment<accumulator, m, n, k, Tc>& c, SIMT_SITE) {
  namespace D = ::simt::wmma_detail;
  D::Call call;
  call.kind = D::Kind::Mma;
  call.run = &D::run_mma<fragment<accumulator, m, n, k, Tc>, fragment<matrix_a, m, n, k, Tab, La>,
                         fragment<matrix_b, m, n, k, Tab, Lb>>;
  call.in[0] = a.x;
  call.in_bytes[0] = sizeof a.x;
  call.in[1] = b.x;
  call.in_bytes[1] = sizeof b.x;
  call.in[2] = c.x;
  call.in_bytes[2] = sizeof c.x;
  call.out = d.x;
  call.out_bytes = sizeof d.x;
  D::arrive(call, SIMT_HERE);
}

}  // namespace wmma
}  // namespace nvcuda

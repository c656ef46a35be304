// The fused LSTM engine's two loops for a CPU backend, as XLA FFI handlers
// (lstm_jax/cpu_kernel.py builds and registers them; lstm_jax/fused.py has the equations).
//
// XLA runs a loop step as a chain of small ops, each through memory, on one core. Here one
// call runs the whole loop: each thread (the caller and XLA's intra-op pool) takes a block of
// the batch's sequences through every step (the sequences are independent, so the threads
// never wait for each other), and a step's matmul, gates and stores run on rows the thread
// has in cache.
//
// float32 throughout, AVX-512; the hidden size a multiple of 16. Layouts are the fused
// engine's, directions stacked first:
//   lstm_forward(x [D,T,B,E], mask [D,T,B], wu [D,E+H,4H], bias [D,4H])
//     -> i, f, g, o, c_prev [D,T,B,H], xh_T [D,E+H+1,T,B] (its last row left unwritten),
//        h, c [D,B,H], ys [D,T,B,H] (the outputs, zero on padded steps)
//   lstm_backward(i, f, g, o, c_prev, mask, dys [D,T,B,H], dh, dc [D,B,H], u_t [D,4H,H])
//     -> dz [D,T,B,4H]
//   lstm_weight_grad(xh_T [D,E+H+1,T*B], dz [D,T*B,4H]) -> dwu [D,E+H+1,4H]
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// e^x: x = n ln2 + r with |r| <= ln2 / 2, e^r by its Taylor polynomial of degree 7
// (relative error below 2e-7 on that range), scaled by 2^n.
inline __m512 Exp(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.f)), _mm512_set1_ps(88.f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);  // ln2 in two parts
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.f / 5040);
  for (float c : {1.f / 720, 1.f / 120, 1.f / 24, 1.f / 6, 0.5f, 1.f, 1.f}) {
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
  }
  return _mm512_scalef_ps(p, n);
}

inline __m512 Sigmoid(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.f);
  return _mm512_div_ps(one, _mm512_add_ps(one, Exp(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}

inline __m512 Tanh(__m512 x) {  // 2 sigmoid(2x) - 1
  return _mm512_fmsub_ps(_mm512_set1_ps(2.f), Sigmoid(_mm512_add_ps(x, x)), _mm512_set1_ps(1.f));
}

// Buffers aligned to 64 bytes (a cache line, an AVX-512 vector): the default allocator's
// 16-byte alignment split every vector load of the packed weights across two cache lines.
template <typename T>
struct Aligned {
  using value_type = T;
  Aligned() = default;
  template <typename U>
  Aligned(const Aligned<U>&) {}
  T* allocate(size_t n) {
    return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{64}));
  }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t{64}); }
  bool operator==(const Aligned&) const { return true; }
  bool operator!=(const Aligned&) const { return false; }
};
using Floats = std::vector<float, Aligned<float>>;

constexpr int kRows = 4, kVectors = 4, kPanel = 16 * kVectors;  // MatMul's block of z
constexpr int64_t kCoreCache = 1 << 20;  // bytes of weights a core keeps in cache (L2)

// The panels of w [K, N] (N a multiple of 16): its columns in groups of kPanel (the last
// one narrower), each stored whole, row after row, so a panel streams through the cache in
// order. The loops pack their weights once a call.
Floats Panels(const float* w, int K, int N) {
  Floats packed(int64_t{K} * N);
  float* to = packed.data();
  for (int n = 0; n < N; n += kPanel) {
    const int width = std::min(kPanel, N - n);
    for (int k = 0; k < K; ++k, to += width) {
      std::memcpy(to, w + int64_t{k} * N + n, sizeof(float) * width);
    }
  }
  return packed;
}

// Panels of each direction's w [D, K, N].
std::vector<Floats> PanelsPerDirection(const float* w, int D, int K, int N) {
  std::vector<Floats> panels;
  for (int d = 0; d < D; ++d) panels.push_back(Panels(w + int64_t{d} * K * N, K, N));
  return panels;
}

// MR rows by 16 NV columns of z = init + a w: a [MR, K] (row stride lda), w [K, 16 NV]
// (row stride ldw), init and z with row strides `is` (0: one row for all) and ldz. With
// kPrefetch, also asks for K cache lines from `next` on into L2, one a step of k.
template <int MR, int NV, bool kPrefetch = false>
inline void Block(const float* a, int lda, int K, const float* w, int ldw, const float* init,
                  int is, float* z, int ldz, const char* next = nullptr) {
  __m512 acc[MR][NV];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NV; ++j) acc[i][j] = _mm512_loadu_ps(init + i * is + 16 * j);
  for (int k = 0; k < K; ++k) {
    if (kPrefetch) _mm_prefetch(next + int64_t{k} * 64, _MM_HINT_T1);
    __m512 wk[NV];
    for (int j = 0; j < NV; ++j) wk[j] = _mm512_loadu_ps(w + int64_t{k} * ldw + 16 * j);
    for (int i = 0; i < MR; ++i) {
      const __m512 ai = _mm512_set1_ps(a[int64_t{i} * lda + k]);
      for (int j = 0; j < NV; ++j) acc[i][j] = _mm512_fmadd_ps(ai, wk[j], acc[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NV; ++j) _mm512_storeu_ps(z + int64_t{i} * ldz + 16 * j, acc[i][j]);
}

// z [rows, width] = init + a [rows, K] w [K, width], rows <= kRows and width <= kPanel a
// multiple of 16; strides and init as in Block.
inline void Tile(const float* a, int lda, int rows, int K, const float* w, int ldw, int width,
                 const float* init, int is, float* z, int ldz) {
  if (rows == kRows && width == kPanel) {
    Block<kRows, kVectors>(a, lda, K, w, ldw, init, is, z, ldz);
  } else if (rows == kRows) {
    for (int q = 0; q < width; q += 16) {
      Block<kRows, 1>(a, lda, K, w + q, ldw, init + q, is, z + q, ldz);
    }
  } else {
    for (int r = 0; r < rows; ++r) {
      for (int q = 0; q < width; q += 16) {
        Block<1, 1>(a + int64_t{r} * lda, lda, K, w + q, ldw, init + int64_t{r} * is + q, is,
                    z + int64_t{r} * ldz + q, ldz);
      }
    }
  }
}

// z [M, N] = init + a [M, K] w [K, N], w given as its Panels; init as in Block. Panels outermost:
// each stays in cache while every row block passes over it, so w is read from memory once a call,
// not once a row block. Weights larger than a core's cache come from memory panel by panel, so
// the first four row blocks of a panel prefetch the next one, a quarter each
// (benchmarks/HISTORY.md has the measurements).
void MatMul(const float* a, int M, int K, const float* panels, int N, const float* init, int is,
            float* z) {
  for (int n = 0; n < N; n += kPanel) {
    const int width = std::min(kPanel, N - n);
    const float* w = panels + int64_t{n} * K;
    const bool stream = int64_t{K} * N * sizeof(float) > kCoreCache && n + 2 * kPanel <= N;
    for (int m = 0; m < M; m += kRows) {
      const float* am = a + int64_t{m} * K;
      const float* im = init + int64_t{m} * is + n;
      float* zm = z + int64_t{m} * N + n;
      const int quarter = m / kRows;
      if (stream && quarter < 4 && m + kRows <= M) {
        const char* next = reinterpret_cast<const char*>(w + int64_t{kPanel} * K) +
                           int64_t{quarter} * K * 64;
        Block<kRows, kVectors, true>(am, K, K, w, width, im, is, zm, N, next);
      } else {
        Tile(am, K, std::min(kRows, M - m), K, w, width, width, im, is, zm, N);
      }
    }
  }
}

// Writes v to p, past the cache when `stream` (p then 64-byte aligned): the forward loop's
// residuals are read only by the backward loop, after the rest of the forward pass, and a
// cached store first reads each line from memory. The backward loop's dz stays cached: XLA's
// matmuls read it next.
inline void Store(float* p, __m512 v, bool stream) {
  if (stream) {
    _mm512_stream_ps(p, v);
  } else {
    _mm512_storeu_ps(p, v);
  }
}

// Runs work(b0, b1) over [0, batch) in `threads` blocks: the calling thread and tasks on
// XLA's intra-op thread pool take blocks from a shared counter until none are left. So the
// call never waits on a task that has not started (a busy pool cannot stall it: the caller
// then runs every block itself), and a task that starts late finds nothing to do. Smaller
// blocks, for a late task to share in, made the step slower (benchmarks/HISTORY.md).
// Each block runs with denormals flushed to zero, as XLA's own loops run (the thread's
// MXCSR is restored after): a gradient that decays into denormals would otherwise take the
// slow microcode path.
template <typename Work>
void OverBatch(int batch, int64_t threads, ffi::ThreadPool& pool, const Work& work) {
  if (batch <= 0) return;
  struct Blocks {
    std::atomic<int> next{0}, done{0};
    std::mutex mutex;
    std::condition_variable finished;
  };
  const int blocks = static_cast<int>(std::clamp<int64_t>(threads, 1, batch));
  auto state = std::make_shared<Blocks>();
  auto drain = [state, batch, blocks, &work] {
    for (int p; (p = state->next.fetch_add(1)) < blocks;) {
      const unsigned int mxcsr = _mm_getcsr();
      _mm_setcsr(mxcsr | 0x8040);  // flush-to-zero and denormals-are-zero
      work(static_cast<int>(int64_t{batch} * p / blocks),
           static_cast<int>(int64_t{batch} * (p + 1) / blocks));
      _mm_sfence();  // the block's streaming stores (Store) done before the call returns
      _mm_setcsr(mxcsr);
      if (state->done.fetch_add(1) + 1 == blocks) {
        std::lock_guard<std::mutex> lock(state->mutex);
        state->finished.notify_all();
      }
    }
  };
  for (int p = 1; p < blocks; ++p) pool.Schedule([drain] { drain(); });
  drain();
  std::unique_lock<std::mutex> lock(state->mutex);
  state->finished.wait(lock, [&] { return state->done.load() == blocks; });
}

using F32 = ffi::Buffer<ffi::F32>;
using Out = ffi::ResultBuffer<ffi::F32>;

ffi::Error Forward(ffi::ThreadPool pool, F32 x, ffi::Buffer<ffi::PRED> mask, F32 wu, F32 bias, Out gi, Out gf, Out gg,
                   Out go, Out gc, Out xh_t, Out h_last, Out c_last, Out ys, int64_t threads) {
  const auto dims = x.dimensions();
  const int D = dims[0], T = dims[1], B = dims[2], E = dims[3];
  const int K = wu.dimensions()[1], N = wu.dimensions()[2], H = N / 4;
  if (K != E + H || H % 16 != 0) {
    return ffi::Error::InvalidArgument("lstm_forward: needs wu [D, E + H, 4H] with H % 16 == 0");
  }
  const float* X = x.typed_data();
  const bool* Mk = mask.typed_data();
  float* stored[5] = {gi->typed_data(), gf->typed_data(), gg->typed_data(), go->typed_data(),
                      gc->typed_data()};
  float* XH = xh_t->typed_data();
  float* Y = ys->typed_data();
  bool stream = true;  // rows of H floats, H % 16 == 0: aligned where every array starts so
  for (const float* a : {stored[0], stored[1], stored[2], stored[3], stored[4], Y}) {
    stream = stream && reinterpret_cast<uintptr_t>(a) % 64 == 0;
  }
  const std::vector<Floats> panels = PanelsPerDirection(wu.typed_data(), D, K, N);
  OverBatch(B, threads, pool, [&](int b0, int b1) {
    const int R = b1 - b0;
    Floats xh(int64_t{R} * K), z(int64_t{R} * N), h(int64_t{R} * H),
        c(int64_t{R} * H);
    for (int d = 0; d < D; ++d) {
      std::fill(h.begin(), h.end(), 0.f);
      std::fill(c.begin(), c.end(), 0.f);
      const float* W = panels[d].data();
      const float* bd = bias.typed_data() + int64_t{d} * N;
      for (int t = 0; t < T; ++t) {
        const int64_t step = (int64_t{d} * T + t) * B + b0;  // row (d, t, b0)
        for (int r = 0; r < R; ++r) {
          std::memcpy(&xh[int64_t{r} * K], X + (step + r) * E, sizeof(float) * E);
          std::memcpy(&xh[int64_t{r} * K + E], &h[int64_t{r} * H], sizeof(float) * H);
        }
        for (int k = 0; k < K; ++k) {  // column t of xh_T, rows b0..b1
          float* to = XH + ((int64_t{d} * (K + 1) + k) * T + t) * B + b0;
          for (int r = 0; r < R; ++r) to[r] = xh[int64_t{r} * K + k];
        }
        MatMul(xh.data(), R, K, W, N, bd, 0, z.data());
        for (int r = 0; r < R; ++r) {
          const int64_t row = (step + r) * H;
          const bool real = Mk[step + r];
          const float* zr = &z[int64_t{r} * N];
          float* hr = &h[int64_t{r} * H];
          float* cr = &c[int64_t{r} * H];
          for (int j = 0; j < H; j += 16) {
            const __m512 i = Sigmoid(_mm512_loadu_ps(zr + j));
            const __m512 f = Sigmoid(_mm512_loadu_ps(zr + H + j));
            const __m512 g = Tanh(_mm512_loadu_ps(zr + 2 * H + j));
            const __m512 o = Sigmoid(_mm512_loadu_ps(zr + 3 * H + j));
            const __m512 c0 = _mm512_loadu_ps(cr + j);
            const __m512 values[5] = {i, f, g, o, c0};
            for (int s = 0; s < 5; ++s) Store(stored[s] + row + j, values[s], stream);
            if (real) {  // padded steps keep the carry
              const __m512 c1 = _mm512_fmadd_ps(f, c0, _mm512_mul_ps(i, g));
              const __m512 h1 = _mm512_mul_ps(o, Tanh(c1));
              _mm512_storeu_ps(cr + j, c1);
              _mm512_storeu_ps(hr + j, h1);
              Store(Y + row + j, h1, stream);
            } else {
              Store(Y + row + j, _mm512_setzero_ps(), stream);
            }
          }
        }
      }
      for (int r = 0; r < R; ++r) {
        const int64_t row = (int64_t{d} * B + b0 + r) * H;
        std::memcpy(h_last->typed_data() + row, &h[int64_t{r} * H], sizeof(float) * H);
        std::memcpy(c_last->typed_data() + row, &c[int64_t{r} * H], sizeof(float) * H);
      }
    }
  });
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::ThreadPool pool, F32 gi, F32 gf, F32 gg, F32 go, F32 gc, ffi::Buffer<ffi::PRED> mask, F32 dys,
                    F32 dh_last, F32 dc_last, F32 u_t, Out dz_out, int64_t threads) {
  const auto dims = gc.dimensions();
  const int D = dims[0], T = dims[1], B = dims[2], H = dims[3], N = 4 * H;
  if (H % 16 != 0) return ffi::Error::InvalidArgument("lstm_backward: needs H % 16 == 0");
  const float *I = gi.typed_data(), *F = gf.typed_data(), *G = gg.typed_data();
  const float *O = go.typed_data(), *C = gc.typed_data(), *DY = dys.typed_data();
  const bool* Mk = mask.typed_data();
  float* DZ = dz_out->typed_data();
  const std::vector<Floats> panels = PanelsPerDirection(u_t.typed_data(), D, N, H);
  OverBatch(B, threads, pool, [&](int b0, int b1) {
    const int R = b1 - b0;
    Floats dz(int64_t{R} * N), dh(int64_t{R} * H), dc(int64_t{R} * H),
        kept(int64_t{R} * H);
    const __m512 one = _mm512_set1_ps(1.f), zero = _mm512_setzero_ps();
    for (int d = 0; d < D; ++d) {
      const int64_t first = (int64_t{d} * B + b0) * H;
      std::memcpy(dh.data(), dh_last.typed_data() + first, sizeof(float) * R * H);
      std::memcpy(dc.data(), dc_last.typed_data() + first, sizeof(float) * R * H);
      const float* U = panels[d].data();
      for (int t = T - 1; t >= 0; --t) {
        const int64_t step = (int64_t{d} * T + t) * B + b0;
        for (int r = 0; r < R; ++r) {
          const int64_t row = (step + r) * H;
          const bool real = Mk[step + r];
          float* dhr = &dh[int64_t{r} * H];
          float* dcr = &dc[int64_t{r} * H];
          float* kr = &kept[int64_t{r} * H];
          float* dzr = &dz[int64_t{r} * N];
          for (int j = 0; j < H; j += 16) {
            const __m512 i = _mm512_loadu_ps(I + row + j), f = _mm512_loadu_ps(F + row + j);
            const __m512 g = _mm512_loadu_ps(G + row + j), o = _mm512_loadu_ps(O + row + j);
            const __m512 c0 = _mm512_loadu_ps(C + row + j);
            const __m512 dh0 = _mm512_loadu_ps(dhr + j), dc0 = _mm512_loadu_ps(dcr + j);
            const __m512 tc = Tanh(_mm512_fmadd_ps(f, c0, _mm512_mul_ps(i, g)));
            const __m512 dht = real ? _mm512_add_ps(dh0, _mm512_loadu_ps(DY + row + j)) : zero;
            const __m512 dct = _mm512_fmadd_ps(_mm512_mul_ps(dht, o), _mm512_fnmadd_ps(tc, tc, one),
                                               real ? dc0 : zero);
            _mm512_storeu_ps(dzr + j, _mm512_mul_ps(_mm512_mul_ps(dct, g),
                                                    _mm512_mul_ps(i, _mm512_sub_ps(one, i))));
            _mm512_storeu_ps(dzr + H + j, _mm512_mul_ps(_mm512_mul_ps(dct, c0),
                                                        _mm512_mul_ps(f, _mm512_sub_ps(one, f))));
            _mm512_storeu_ps(dzr + 2 * H + j,
                             _mm512_mul_ps(_mm512_mul_ps(dct, i), _mm512_fnmadd_ps(g, g, one)));
            _mm512_storeu_ps(dzr + 3 * H + j, _mm512_mul_ps(_mm512_mul_ps(dht, tc),
                                                            _mm512_mul_ps(o, _mm512_sub_ps(one, o))));
            _mm512_storeu_ps(dcr + j, _mm512_fmadd_ps(dct, f, real ? zero : dc0));
            _mm512_storeu_ps(kr + j, real ? zero : dh0);
          }
          std::memcpy(DZ + (step + r) * N, dzr, sizeof(float) * N);
        }
        MatMul(dz.data(), R, N, U, H, kept.data(), H, dh.data());  // dh = dz U^T + kept
      }
    }
  });
  return ffi::Error::Success();
}

// dwu [D, M, N] = xh_T [D, M, S] dz [D, S, N] for each direction: the weight and bias
// gradients, summed over the S = time x batch rows in chunks of dz that stay in cache
// (half a core's cache), each thread taking a block of dwu's rows. XLA's matmul ran this shape
// (the BiLSTM's [129, 8192] x [8192, 256]) at about half a core's rate.
ffi::Error WeightGrad(ffi::ThreadPool pool, F32 xh_t, F32 dz, Out dwu, int64_t threads) {
  const auto dims = xh_t.dimensions();
  const int D = dims[0], M = dims[1], S = dims[2], N = dz.dimensions()[2];
  if (N % 16 != 0) return ffi::Error::InvalidArgument("lstm_weight_grad: needs N % 16 == 0");
  if (S == 0) {  // no steps or no sequences: a zero gradient (the loop below writes nothing)
    std::fill_n(dwu->typed_data(), int64_t{D} * M * N, 0.f);
    return ffi::Error::Success();
  }
  const int depth = std::clamp(static_cast<int>(kCoreCache / 2 / (N * 4)) / 16 * 16, 16, 512);
  const Floats zeros(N, 0.f);
  OverBatch(M, threads, pool, [&](int m0, int m1) {
    for (int d = 0; d < D; ++d) {
      const float* A = xh_t.typed_data() + int64_t{d} * M * S;
      const float* W = dz.typed_data() + int64_t{d} * S * N;
      float* Z = dwu->typed_data() + int64_t{d} * M * N;
      for (int k0 = 0; k0 < S; k0 += depth) {
        const int kc = std::min(depth, S - k0);
        for (int n = 0; n < N; n += kPanel) {
          const int width = std::min(kPanel, N - n);
          for (int m = m0; m < m1; m += kRows) {
            float* zm = Z + int64_t{m} * N + n;
            const float* im = k0 == 0 ? zeros.data() + n : zm;
            Tile(A + int64_t{m} * S + k0, S, std::min(kRows, m1 - m), kc,
                 W + int64_t{k0} * N + n, N, width, im, k0 == 0 ? 0 : N, zm, N);
          }
        }
      }
    }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmForward, Forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Attr<int64_t>("threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmBackward, Backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Ret<F32>()
                                  .Attr<int64_t>("threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmWeightGrad, WeightGrad,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Ret<F32>()
                                  .Attr<int64_t>("threads"));

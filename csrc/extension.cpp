// The Python module simplexkern._C. Loading it registers the simplexkern:: torch ops.
#include <pybind11/pybind11.h>

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Compiled kernels of simplexkern (registered as torch.ops.simplexkern.*)";
  m.def("cuda_enabled", [] {
#ifdef WITH_CUDA
    return true;
#else
    return false;
#endif
  }, "Whether the extension was built with its CUDA kernels.");
}

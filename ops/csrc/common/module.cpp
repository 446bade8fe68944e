// Python module entry point of pointdistiller.ops._C. The ops themselves are registered with the
// dispatcher by the TORCH_LIBRARY / TORCH_LIBRARY_IMPL blocks of each op folder when this shared
// library is loaded; the module object itself is empty.
#include <Python.h>

static struct PyModuleDef pd_ops_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&pd_ops_module); }

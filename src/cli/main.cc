#include <cstdio>
int main() { std::puts("tetra"); return 0; }

/* placeholder: replaced by the coproc-lua interpreter */
int main(void) { return 0; }
